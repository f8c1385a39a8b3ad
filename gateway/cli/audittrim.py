"""`killgate audit trim [--dry-run] --reason TEXT`: `POST /v1/audit/trim`, audit
retention's trim now (back to `state.audit_retention`'s bounds) rather than at the next
`interval`; `--dry-run` says how many events the first trim would remove, removing none.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.cli.client import ClientError, api
from gateway.cli.shapes import Shape
from gateway.domain.audit import clean_text

__all__ = ["add_trim_arguments", "trim", "trim_options_alone"]

TRIMMED: Shape = {"dry_run": bool}


def add_trim_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="trim: say how many events the trim would remove; remove none")
    p.add_argument("--reason", help="trim: why (recorded in its audit.trim checkpoint); "
                                    "required unless --dry-run")


def trim_options_alone(args: argparse.Namespace) -> None:
    """--dry-run and --reason belong to `audit trim` only."""
    if args.action != "trim" and (args.dry_run or args.reason is not None):
        raise ClientError("--dry-run and --reason go with `killgate audit trim` only")


def trim(args: argparse.Namespace) -> int:
    if not args.dry_run and not (args.reason or "").strip():
        raise ClientError("audit trim needs --reason TEXT (recorded in its checkpoint), or "
                          "--dry-run to see how many events it would remove")
    body = {"reason": args.reason} if args.reason is not None else None
    path = "/v1/audit/trim" + ("?dry_run=true" if args.dry_run else "")
    res = api(args, "POST", path, body, shape=TRIMMED)
    if res["dry_run"] is not args.dry_run:
        raise ClientError("unexpected answer from the admin API: "
                          f"dry_run {res['dry_run']!r}, not {args.dry_run!r}")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(_text(res))
    if res.get("broken") is True:  # (some batches went, then a break: tamper evidence)
        print("killgate: the trim stopped at a break: "
              + clean_text(str(res.get("why", "")), 500)
              + "; run `killgate audit verify`", file=sys.stderr)
        return 1
    return 0


def _text(res: dict[str, Any]) -> str:
    why = clean_text(str(res.get("why", "")), 500)
    if res["dry_run"]:
        n = res.get("would_remove")
        if not n:
            return f"a trim now would remove nothing ({why}); nothing was changed"
        more = (", then more batch after batch down to the bounds" if res.get("more")
                else "")
        return (f"a trim now would remove the oldest {n} of {res.get('events')} events"
                f"{more}; nothing was changed (dry run)")
    if not res.get("removed"):
        return f"nothing removed ({why})"
    cks = ", ".join(clean_text(str(c), 64) for c in res.get("checkpoints") or [])
    return (f"removed the oldest {res['removed']} events; the trail now holds "
            f"{res.get('events')}, starting after checkpoint(s) {cks}"
            + (f" ({why})" if why and res.get("broken") is not True else ""))
