"""The CLI's two-person approval commands (CONTRACT §1, §5.2): `approvals`, `approve ID`,
`decline ID`.

Owns what an approver sees before approving: the change itself (action, target, values,
who asked and why) and its hash, which `approve` sends back so the gateway applies that
change and no other. Exit codes: 0 done (approved, applied or declined), 1 error,
4 applied but not yet by every instance.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.parse
from typing import Any

from gateway.cli.client import may_read, raw_call, warn_silent
from gateway.cli.http import ClientError
from gateway.cli.killcmds import still_killed
from gateway.cli.shapes import APPROVAL, RECEIPT, expect
from gateway.domain.audit import clean_text

__all__ = ["add_approval_commands"]

LISTING = {"approvals": list}
ITEM = {"id": str, "action": str, "target": dict, "args": dict, "requested_by": str,
        "reason": str, "needs": int, "approved_by": list, "expires": str, "hash": str}


def _q(ident: str) -> str:
    """An id as one path segment: `../../kill` must not name another endpoint."""
    return urllib.parse.quote(ident, safe="")


def _open(args: argparse.Namespace) -> list[dict[str, Any]]:
    answer = raw_call(args, "GET", "/v1/approvals")
    if answer.status != 200:
        raise ClientError(f"the admin API answered {answer.status}, not 200")
    items = expect(answer.body, LISTING)["approvals"]
    for item in items:
        if not isinstance(item, dict):
            raise ClientError("unexpected answer from the admin API: an approval is not an "
                              "object")
        expect(item, ITEM)
    return list(items)


def _describe(a: dict[str, Any]) -> str:
    """What an approver reads, every value escaped: text from the state (who asked, why)
    must not move the terminal's cursor over the line that says what the change is."""
    c = clean_text
    target = "/".join(c(str(v)) for v in a["target"].values() if v) or "global"
    values = ", ".join(f"{c(str(k))}={json.dumps(v)}" for k, v in a["args"].items()
                       if v is not None)
    return (f"{c(a['id'])}: {c(a['action'])} {target}" + (f" ({values})" if values else "")
            + f"\n  asked by {c(a['requested_by'])}: {c(a['reason'])}"
            + f"\n  approvals {len(a['approved_by'])}/{a['needs']} "
              f"({', '.join(c(str(x)) for x in a['approved_by'])}); expires {c(a['expires'])}"
            + f"\n  change hash {c(a['hash'])}" + _newer(a))


def _newer(a: dict[str, Any]) -> str:
    """The line that says a request was made on a newer version (rolling upgrade): this
    gateway does not know all it would change, and refuses to approve it."""
    newer = a.get("from_newer_version")
    if not isinstance(newer, dict):
        return ""
    by = newer.get("written_by")
    return (f"\n  REQUESTED ON A NEWER VERSION ({clean_text(by if isinstance(by, str) else 'unnamed')}"
            f"): {clean_text(str(newer.get('unknown', '')))}; "
            f"{clean_text(str(newer.get('decide', '')))}")


def _list(args: argparse.Namespace) -> int:
    items = _open(args)
    if args.json:
        print(json.dumps({"approvals": items}, indent=2))
    elif not items:
        print("no open approval requests")
    else:
        print("\n".join(_describe(a) for a in items))
    return 0


def _approve(args: argparse.Namespace) -> int:
    found = [a for a in _open(args) if a["id"] == args.id]
    if not found:
        token = getattr(args, "token", None) or os.environ.get("KILLGATE_TOKEN")
        if not may_read(token):  # (the list holds only what this token may approve)
            raise ClientError(
                f"no open approval {args.id!r} this token may approve: without killgate:read "
                "the gateway lists only the requests its scopes may approve (an unkill needs "
                "killgate:kill, a rollback, promote, weights or release killgate:rollout); "
                "it may still be waiting for someone who may (killgate approvals with a "
                "killgate:read token shows every open one), or it expired, was declined or "
                "applied")
        raise ClientError(f"no open approval {args.id!r} (expired, declined or applied?)")
    item = found[0]
    if not args.json:
        print(f"approving {_describe(item)}")
    body: dict[str, Any] = {"hash": item["hash"]}
    if args.reason:
        body["reason"] = args.reason
    answer = raw_call(args, "POST", f"/v1/approvals/{_q(args.id)}/approve", body)
    if answer.status == 202:  # recorded; more approvals are needed
        pending = expect(answer.body, APPROVAL)["approval"]
        if args.json:
            print(json.dumps(answer.body, indent=2))
        else:
            print(f"approved; {len(pending['approved_by'])}/{pending['needs']} so far, "
                  "not applied yet")
        return 0
    if answer.status != 200:
        raise ClientError(f"the admin API answered {answer.status}, not 200 or 202")
    res = expect(answer.body, {**RECEIPT, "approval": {"id": str, "state": str}})
    if res["approval"]["id"] != args.id or res["approval"]["state"] != "applied":
        raise ClientError(f"the admin API answered about approval {res['approval']!r}")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        ap = res["applied"]
        print(f"approved and applied: generation {res['generation']}: applied by "
              f"{ap['acked']}/{ap['instances']} instance(s) in {ap['elapsed_ms']} ms"
              + (f"; NOT YET by: {', '.join(clean_text(str(p), 128) for p in ap['pending'])}"
                 if ap["pending"] else "") + still_killed(res))
    warn_silent(args, res)
    return 0 if not res["applied"]["pending"] else 4


def _decline(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason} if args.reason else {}
    answer = raw_call(args, "POST", f"/v1/approvals/{_q(args.id)}/decline", body)
    if answer.status != 200:
        raise ClientError(f"the admin API answered {answer.status}, not 200")
    res = expect(answer.body, {"approval": {"id": str, "state": str}})
    if res["approval"] != {"id": args.id, "state": "declined"}:
        raise ClientError(f"the admin API answered about approval {res['approval']!r}")
    print(json.dumps(res, indent=2) if args.json else f"declined {args.id}")
    return 0


def add_approval_commands(cmd: Any) -> None:
    """`cmd(name, fn, help)` adds a subcommand with the client options (cli/admin.py)."""
    cmd("approvals", _list, "open two-person approval requests")
    p = cmd("approve", _approve, "approve a request (shows the change first; another "
                                 "principal than the requester)")
    p.add_argument("id", metavar="ID", help="the request's id (killgate approvals)")
    p.add_argument("--reason", help="why (recorded in the audit trail)")
    p = cmd("decline", _decline, "decline a request: it is dropped, nothing changes")
    p.add_argument("id", metavar="ID", help="the request's id (killgate approvals)")
    p.add_argument("--reason", help="why (recorded in the audit trail)")
