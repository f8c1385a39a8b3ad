"""`killgate state vouch --reason TEXT`: `POST /v1/state/vouch` on the instance --admin
names: its signing key is the fleet's, said by an operator (scope killgate:admin).

An instance (or a `--workers` group) that seeded a flushed store from a snapshot it could
not verify stays "not known to be the fleet's" (`unverified_origin` in its snapshot, `store.
snapshot` in /v1/status) until another instance re-seeds over its document, which a lone
instance never sees. This clears it with an audited write (`state.vouch`). Exit 1 with the
API's reason when there is nothing to vouch for (409 `nothing_to_vouch`) or the store holds
a document the instance cannot verify (503: its key is not the fleet's; nothing written).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.client import ClientError, api
from gateway.cli.shapes import Shape
from gateway.domain.audit import clean_text

__all__ = ["add_state_commands"]

VOUCHED: Shape = {"vouched": bool, "instance": str, "was": str, "generation": int,
                  "epoch": str}

HELP = ("vouch: say the signing key of the instance --admin names is the fleet's, clearing "
        "the mark of state that came from a snapshot it could not verify "
        "(unverified_origin, kills only; scope killgate:admin, audited state.vouch); "
        "only once its key is known good: the store must hold a document it verifies")


def add_state_commands(cmd: Any) -> None:
    p = cmd("state", _state, "the instance's replicated state: 'state vouch'")
    # (metavar: a bare `killgate state` said "required: action", a word its usage never shows)
    p.add_argument("action", choices=["vouch"], metavar="vouch", help=HELP)
    p.add_argument("--reason", help="vouch: why (recorded in its audit event); required")


def _state(args: argparse.Namespace) -> int:
    if not (args.reason or "").strip():
        raise ClientError("state vouch needs --reason TEXT (recorded in its audit event)")
    res = api(args, "POST", "/v1/state/vouch", {"reason": args.reason}, shape=VOUCHED)
    if res["vouched"] is not True:
        raise ClientError(f"unexpected answer from the admin API: vouched {res['vouched']!r}")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(_text(res))
    return 0


def _text(res: dict[str, Any]) -> str:
    return (f"vouched for {clean_text(res['instance'], 128)}: its state is now known to be "
            f"the fleet's (was: {clean_text(res['was'], 500)}); generation "
            f"{res['generation']}, epoch {clean_text(res['epoch'], 32)}")
