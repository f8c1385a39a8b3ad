"""The CLI's kill and unkill: what each sends and what its answer must echo.

Owns the kill's selector (`--global`, or `--route` with `--version`), the kill key the
answer must name (an answer about anything else fails the command), `kill --local` (the
emergency local kill when the store cannot commit: exit 5), and an unkill that names the
kill in force it lifts, and says a wider kill still stopping that traffic. Their arguments
are cli/writes.py's; the call, the receipt and exit codes cli/client.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.parse
from typing import Any

from gateway.cli.client import (
    ClientError,
    glass,
    may_read,
    print_receipt,
    raw_call,
    warn_silent,
    write,
)
from gateway.domain.audit import clean_text
from gateway.domain.statedoc import kill_key

__all__ = ["given", "kill_command", "still_killed", "unkill_command"]


def given(args: argparse.Namespace, *names: str) -> None:
    """An option given empty (`--version "$V"` with V unset in a runbook) is an error: read as
    absent, it would widen a version kill to the whole route, or roll back elsewhere."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not value.strip():
            raise ClientError(f"--{name} is empty (an unset variable?); give a name, or leave "
                              "the option out")


def _selector(args: argparse.Namespace) -> dict[str, Any]:
    given(args, "route", "version")
    if args.all:
        if args.route or args.version:
            raise ClientError("--global takes no --route or --version")
        return {"scope": "global"}
    if not args.route:
        raise ClientError("give --global, or --route ROUTE [--version VERSION]")
    if args.version:
        return {"scope": "version", "route": args.route, "version": args.version}
    return {"scope": "route", "route": args.route}


def _key(body: dict[str, Any]) -> str:
    return kill_key(body["scope"], body.get("route"), body.get("version"))


def kill_command(args: argparse.Namespace) -> int:
    body = {**_selector(args), "reason": args.reason, "abort_inflight": not args.keep_inflight}
    if args.local:
        return _local_kill(args, body)
    return write(args, "POST", "/v1/kill", body,
                 lambda res: f"killed {res['kill']}" if res.get("changed", True)
                 else f"{res['kill']} was already killed (unchanged)",
                 {"kill": _key(body)})


def _local_kill(args: argparse.Namespace, body: dict[str, Any]) -> int:
    """`kill --local`: through the store when it commits (a kill like any other), else an
    emergency kill of the instance that answered (202 `local`), merged when the store
    answers. Exit 5 when taken locally: the rest of the fleet does not enforce it yet."""
    query = {"local": "1", **({"wait": args.wait} if args.wait else {})}
    answer = raw_call(args, "POST", "/v1/kill?" + urllib.parse.urlencode(query), body)
    res = answer.body if isinstance(answer.body, dict) else {}
    if res.get("kill") != _key(body):
        raise ClientError(f"the admin API answered {answer.status} about "
                          f"{clean_text(str(res.get('kill')), 200)!r}, not {_key(body)!r}")
    if args.json:
        print(json.dumps(res, indent=2))
    if answer.status == 202 and res.get("local") is True:
        if not args.json:
            print(f"LOCAL KILL {res['kill']} on {clean_text(str(res.get('instance')), 200)} "
                  f"(id {clean_text(str(res.get('id')), 64)}"
                  + ("" if res.get("changed") else ", already taken") + "): the state store "
                  f"cannot commit ({clean_text(str(res.get('store')), 500)}); enforced on this "
                  "instance and its --workers group only, NOT by other instances until the "
                  "store answers and it is merged (killgate status shows it)")
        return 5
    if answer.status != 200:
        raise ClientError(f"the admin API answered {answer.status}, not 200 or 202")
    if not args.json:
        print(f"killed {res['kill']}" if res.get("changed", True)
              else f"{res['kill']} was already killed (unchanged)")
        if "applied" in res:
            print_receipt(res)
    if isinstance(res.get("applied"), dict):  # (a kill like any other: as `write` warns)
        warn_silent(args, res)
    return 0 if not (res.get("applied") or {}).get("pending") else 4


def unkill_command(args: argparse.Namespace) -> int:
    body = {**_selector(args), "reason": args.reason, **glass(args)}
    kill = _kill_in_force(args, _key(body))
    if kill is not None:
        # this kill, and no other: a second try (no answer in --timeout) or an approval
        # must not lift one made meanwhile (lifted and killed again by another incident)
        body["kill"] = kill
    return write(args, "POST", "/v1/unkill", body, lambda res: f"lifted {res['unkill']}"
                 + still_killed(res), {"unkill": _key(body)})


def still_killed(res: dict[str, Any]) -> str:
    """What an unkill's line adds when a wider kill still stops the same traffic."""
    wider = res.get("still_killed_by")
    if not isinstance(wider, str):
        return ""
    return (f"; STILL KILLED by the {clean_text(wider, 200)} kill in force: that traffic "
            "stays stopped until it is lifted")


def _kill_in_force(args: argparse.Namespace, key: str) -> str | None:
    """The id of the kill in force on `key`, as /v1/status shows it; None when the token
    cannot read it (killgate:kill alone: not asked, which would audit a refusal), or no
    kill is there (the unkill says so)."""
    if not may_read(getattr(args, "token", None) or os.environ.get("KILLGATE_TOKEN")):
        return None
    try:
        answer = raw_call(args, "GET", "/v1/status")
    except ClientError:
        return None
    if answer.status != 200 or not isinstance(answer.body, dict):
        return None
    kills = answer.body.get("kills")
    for k in kills if isinstance(kills, list) else ():  # (an answer's: any type at all)
        if (isinstance(k, dict) and isinstance(k.get("id"), str)
                and kill_key(k.get("scope", ""), k.get("route"), k.get("version")) == key):
            return str(k["id"])
    return None
