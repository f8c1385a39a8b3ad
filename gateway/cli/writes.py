"""The CLI's state-changing commands: kill, unkill, rollback, promote, weights, release.

Owns their arguments, the body each sends, and what the answer must echo (the kill key,
the route and action: an answer about anything else fails the command). The call, the
receipt and exit codes are cli/client.py's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import urllib.parse
from typing import Any

from gateway.cli.client import (
    ClientError,
    duration_arg,
    glass,
    glass_option,
    may_read,
    print_receipt,
    quote,
    raw_call,
    warn_silent,
    write,
)
from gateway.config_types import parse_duration
from gateway.domain.audit import clean_text
from gateway.domain.statedoc import kill_key

__all__ = ["add_write_commands", "still_killed"]

MAX_WAIT = 30.0  # seconds: the API's bound on `wait` (admin/inputs.py MAX_WAIT)


def _wait_arg(text: str) -> str:
    """--wait: a duration the API takes. One over its bound was sent, and the API refused
    the whole write for it: a kill asked with `--wait 2m` was not made."""
    text = duration_arg(text)
    if parse_duration(text) > MAX_WAIT:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than the API waits for a "
                                         f"receipt (at most {MAX_WAIT:g}s)")
    return text


ROUTE_HELP = "route name (or --route ROUTE)"
WAIT_HELP = ("how long the receipt waits for every instance to apply it: a duration with its "
             "unit (500ms, 5s; at most 30s; default 1s); exit 4 if some had not")


def _given(args: argparse.Namespace, *names: str) -> None:
    """An option given empty (`--version "$V"` with V unset in a runbook) is an error: read as
    absent, it would widen a version kill to the whole route, or roll back elsewhere."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not value.strip():
            raise ClientError(f"--{name} is empty (an unset variable?); give a name, or leave "
                              "the option out")


def _selector(args: argparse.Namespace) -> dict[str, Any]:
    _given(args, "route", "version")
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


def _kill(args: argparse.Namespace) -> int:
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


def _unkill(args: argparse.Namespace) -> int:
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


def _words(args: argparse.Namespace) -> list[str]:
    """The positional words in the order given: argparse fills an optional positional with
    nothing when an option comes first (`promote iris --reason r v2` leaves v2 over, which
    cli/main.py's parse hands over as `more`)."""
    words = [getattr(args, "route", None), getattr(args, "version", None)]
    out = [w for w in words if w is not None]
    return out + list(getattr(args, "pairs", None) or []) + list(getattr(args, "more", []))


def _take_route(args: argparse.Namespace, usage: str, words: list[str],
                has_route_word: bool) -> list[str]:
    """Sets args.route from the first word (when `has_route_word`) or `--route`: either, or
    both when they agree. Returns the words after the route."""
    word = words[0] if has_route_word else None
    for value, what in ((args.route_opt, "--route"), (word, "the route")):
        if value is not None and not value.strip():
            raise ClientError(f"{what} is empty (an unset variable?); give a route name")
    if args.route_opt and word and word != args.route_opt:
        raise ClientError(f"two routes given: {word!r} and --route {args.route_opt!r}; "
                          f"give one (killgate {usage})")
    args.route = word or args.route_opt
    if not args.route:
        raise ClientError(f"give the route: killgate {usage}")
    return words[1:] if has_route_word else words


def _no_more(rest: list[str], usage: str) -> None:
    if rest:
        raise ClientError(f"unrecognized arguments: {' '.join(rest)} (killgate {usage})")


def _rollback(args: argparse.Namespace) -> int:
    usage = "rollback ROUTE [--to V] --reason TEXT, or --route ROUTE"
    words = _words(args)
    _no_more(_take_route(args, usage, words, bool(words)), usage)
    _given(args, "to")
    body: dict[str, Any] = {"reason": args.reason, **glass(args)}
    if args.to:
        body["to"] = args.to
    try:
        # (without --to, the answer names the version it went to: the previous stable is
        # not always the one that served before, e.g. after a `weights` cut-over)
        return write(args, "POST", f"/v1/routes/{quote(args.route)}/rollback", body,
                     lambda res: f"rolled back {args.route}" + (
                         f" to {clean_text(str(res['to']), 200)}" if res.get("to") else ""),
                     {"route": args.route, "action": "rollback"})
    except ClientError as exc:  # (the API's message names its body field, 'to')
        if args.to or not str(exc).startswith(("409 no_previous_stable", "409 rolled_back")):
            raise
        raise ClientError(f"{exc} (killgate rollback {args.route} --to VERSION)",
                          exc.code, exc.status, exc.kind) from None


def _promote(args: argparse.Namespace) -> int:
    usage = "promote ROUTE VERSION --reason TEXT, or --route ROUTE VERSION"
    words = _words(args)  # (`promote --route iris v2`: the one word is the version)
    rest = _take_route(args, usage, words, len(words) >= 2 or not args.route_opt)
    if not rest or not rest[0].strip():
        raise ClientError(f"give the version to make stable: killgate {usage}")
    _no_more(rest[1:], usage)
    args.version = rest[0]
    return write(args, "POST", f"/v1/routes/{quote(args.route)}/promote",
                 {"version": args.version, "reason": args.reason, **glass(args)},
                 f"promoted {args.version} on {args.route}",
                 {"route": args.route, "action": "promote"})


def _weights(args: argparse.Namespace) -> int:
    usage = "weights ROUTE V=W [V=W ...] --reason TEXT, or --route ROUTE V=W ..."
    words = _words(args)  # (no route name holds a '=': `weights --route iris v1=90`)
    pairs = _take_route(args, usage, words, bool(words) and "=" not in words[0])
    if not pairs:
        raise ClientError(f"give the weights: killgate {usage}")
    weights: dict[str, float] = {}
    for pair in pairs:
        name, sep, w = pair.partition("=")
        try:
            if not sep or not name or not math.isfinite(float(w)):
                raise ValueError
            weights[name] = float(w)
        except ValueError:
            raise ClientError(f"{pair!r} is not VERSION=WEIGHT (a finite number)") from None
        if sum(p.partition("=")[0] == name for p in pairs) > 1:
            # (`v1=50 v1=50` for `v1=50 v2=50` sent v1 everything and v2 nothing)
            raise ClientError(f"version {name!r} is given more than once; name each version "
                              "once (every version not named gets weight 0)")
    return write(args, "PUT", f"/v1/routes/{quote(args.route)}/weights",
                 {"weights": weights, "reason": args.reason, **glass(args)},
                 f"weights of {args.route}: " + ", ".join(f"{k}={v:g}" for k, v in
                                                          weights.items())
                 # (`weights iris v2=20` meant as "the canary at 20 %" sends v2 everything)
                 + "; every version not named here: 0 (no weighted traffic)",
                 {"route": args.route, "action": "weights"})


def _release(args: argparse.Namespace) -> int:
    usage = "release ROUTE --reason TEXT, or --route ROUTE"
    words = _words(args)
    _no_more(_take_route(args, usage, words, bool(words)), usage)
    return write(args, "POST", f"/v1/routes/{quote(args.route)}/release",
                 {"reason": args.reason, **glass(args)},
                 lambda res: f"released {args.route} to its config file" + "".join(
                     # (a version a rollback took off as bad serves again: said)
                     f"\nWARNING: {clean_text(str(w), 500)}"
                     for w in res.get("warnings") or () if isinstance(res["warnings"], list)),
                 {"route": args.route, "action": "release"})


def add_write_commands(cmd: Any) -> None:
    """`cmd(name, fn, help)` adds a subcommand with the client options (cli/admin.py)."""
    for name, fn, help_ in (("kill", _kill, "stop traffic to a scope (global, route, version)"),
                            ("unkill", _unkill, "lift a kill (the only way a kill is lifted)")):
        p = cmd(name, fn, help_)
        p.add_argument("--global", dest="all", action="store_true", help="every route")
        p.add_argument("--route", help="route name")
        p.add_argument("--version", help="version name (with --route)")
        p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
        p.add_argument("--wait", default=None, type=_wait_arg, help=WAIT_HELP)
        if name == "kill":
            p.add_argument("--keep-inflight", action="store_true",
                           help="let responses already streaming finish")
            p.add_argument("--local", action="store_true",
                           help="emergency: when the state store cannot commit, kill on the "
                           "instance that answers (and its --workers group) only, merged "
                           "into the store when it returns; exit 5 then")
        else:
            glass_option(p)
    p = cmd("rollback", _rollback, "make the previous (or --to) version stable with 100%%")
    p.add_argument("route", nargs="?", help=ROUTE_HELP)
    p.add_argument("--to", help="version to roll back to (default: previous stable)")
    _route_options(p)
    p = cmd("promote", _promote, "make VERSION stable with 100%% of traffic")
    p.add_argument("route", nargs="?", help=ROUTE_HELP)
    p.add_argument("version", nargs="?", help="the version to make stable")
    _route_options(p)
    p = cmd("weights", _weights, "override a route's weights: V=W [V=W ...]")
    p.add_argument("route", nargs="?", help=ROUTE_HELP)
    p.add_argument("pairs", nargs="*", metavar="V=W",
                   help="version=weight; versions not named get 0 (unpinnable until release)")
    _route_options(p)
    p = cmd("release", _release, "drop a route's runtime overrides (the file governs again)")
    p.add_argument("route", nargs="?", help=ROUTE_HELP)
    _route_options(p)


def _route_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--route", dest="route_opt", metavar="ROUTE",
                   help="the route, as kill and unkill take it (instead of the first word)")
    p.set_defaults(more=[])
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--wait", default=None, type=_wait_arg, help=WAIT_HELP)
    glass_option(p)
