"""What every admin client command shares: options, the call, tables, exit codes.

Owns `--admin`/`--token`/`--timeout`/`--json`, one API call answered 200 (a 202 approval request
ends the command with exit 3), a write's receipt line (exit 4 when not applied
everywhere), tables with control characters escaped. Standard library, cli/http.py and cli/shapes.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

from gateway.cli.http import TIMEOUT, Answer, ClientError, call
from gateway.cli.shapes import APPROVAL, RECEIPT, Shape, expect
from gateway.config_types import parse_duration
from gateway.domain.audit import clean_text

__all__ = ["DEFAULT_ADMIN", "ClientError", "api", "common_options", "glass", "glass_option",
           "may_read", "print_receipt", "quote", "raw_call", "run", "silent_instances",
           "table", "timeout_of", "warn_silent", "write"]

DEFAULT_ADMIN = "http://127.0.0.1:8081"


def common_options(p: argparse.ArgumentParser, top: bool = False) -> None:
    d = None if top else argparse.SUPPRESS
    p.add_argument("--admin", default=d, metavar="URL",
                   help=f"admin API (default $KILLGATE_ADMIN_URL or {DEFAULT_ADMIN})")
    p.add_argument("--token", default=d, help="bearer token (default $KILLGATE_TOKEN)")
    p.add_argument("--timeout", default=d, type=_seconds, metavar="SECONDS",
                   help=f"how long to wait for each answer: seconds, or a duration (5s, "
                        f"500ms) (default $KILLGATE_TIMEOUT or {TIMEOUT:g}); a write that "
                        "gets none is sent once more; keep it above a write's --wait")
    p.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="machine-readable output")


def raw_call(args: argparse.Namespace, method: str, path: str,
             body: dict[str, Any] | None = None, patient: bool = True) -> Answer:
    """One call to the admin API named by the options (or the environment), any status
    (`patient`: a 429 before the token was checked is waited out, see `call`)."""
    base = (getattr(args, "admin", None) or os.environ.get("KILLGATE_ADMIN_URL")
            or DEFAULT_ADMIN).rstrip("/")
    token = getattr(args, "token", None) or os.environ.get("KILLGATE_TOKEN")
    return call(base, token, method, path, body, timeout_of(args),
                lambda why: print(f"killgate: {why}", file=sys.stderr), patient)


def timeout_of(args: argparse.Namespace) -> float:
    """Each answer's time: --timeout, else $KILLGATE_TIMEOUT, else TIMEOUT."""
    timeout = getattr(args, "timeout", None)
    if timeout is None:
        env = os.environ.get("KILLGATE_TIMEOUT")
        timeout = _seconds(env, "$KILLGATE_TIMEOUT") if env else TIMEOUT
    return float(timeout)


def _seconds(text: str, where: str = "--timeout") -> float:
    """A timeout in seconds, 0 < t <= 600 (argparse's type, and $KILLGATE_TIMEOUT's); a
    duration with its unit too (`5s`, `500ms`), as --wait and --ttl take (a new user's
    `--timeout 5s` beside `--wait 5s` was refused)."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError:
            value = math.nan
    if not 0 < value <= 600:
        msg = (f"{where} must be a number of seconds, or a duration such as 5s, above 0 and "
               f"at most 600 s, not {text!r}")
        if where == "--timeout":
            raise argparse.ArgumentTypeError(msg)
        raise ClientError(msg)
    return value


def duration_arg(text: str) -> str:
    """argparse's type for a duration option (`--wait 5s`, `--hold 500ms`): checked here, so
    `--wait 5` is refused before anything is sent; passed on as written."""
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def api(args: argparse.Namespace, method: str, path: str,
        body: dict[str, Any] | None = None, shape: Shape | None = None) -> dict[str, Any]:
    """One API call answered 200, its body checked against `shape`. An approval request
    (202) is printed and ends the command with exit 3: nothing was changed yet."""
    answer = raw_call(args, method, path, body)
    if answer.status == 202 and body is not None:
        pending = expect(answer.body, APPROVAL)["approval"]
        if getattr(args, "json", False):
            print(json.dumps(answer.body, indent=2))
        else:
            ident = clean_text(pending["id"], 64)
            mine = answer.body.get("you_may_approve") is not True
            by = clean_text(str(pending.get("requested_by", "another principal")), 256)
            print(f"approval {ident} " + ("requested" if mine else f"already requested by {by}")
                  + f": {clean_text(pending['action'], 64)} needs "
                  f"{pending['needs']} principals, approved by "
                  f"{', '.join(clean_text(str(a), 256) for a in pending['approved_by'])}; "
                  f"expires {clean_text(pending['expires'], 64)}\n" + (
                      f"nothing is changed until another principal runs: killgate approve "
                      f"{ident}" if mine else "nothing is changed yet; you may approve it: "
                      f"killgate approve {ident}"))
        raise ClientError("", code=3)
    if answer.status != 200:
        raise ClientError(f"the admin API answered {answer.status}, not 200")
    return expect(answer.body, shape) if shape is not None else answer.body


def table(rows: list[list[str]]) -> str:
    """Aligned columns; control characters in cells are shown escaped, so a value from the
    audit trail cannot move the cursor, color the terminal or forge a row."""
    if not rows:
        return ""
    cells = [[clean_text(str(c), 4096) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def quote(s: str) -> str:
    """A path segment (a route or version name), escaped."""
    return urllib.parse.quote(s, safe="")


def print_receipt(res: dict[str, Any]) -> None:
    ap = res.get("applied", {})
    line = (f"generation {res.get('generation')}: applied by {ap.get('acked')}/"
            f"{ap.get('instances')} instance(s) in {ap.get('elapsed_ms')} ms")
    if ap.get("pending"):
        line += f"; NOT YET by: {', '.join(clean_text(str(p), 128) for p in ap['pending'])}"
    print(line)


def write(args: argparse.Namespace, method: str, path: str, body: dict[str, Any],
          label: str | Callable[[dict[str, Any]], str],
          asked: dict[str, Any] | None = None) -> int:
    """One write: the receipt as a line (or JSON); exit 4 if some instance had not applied
    it. `asked`: fields the answer must echo (the kill key, the route and action), or the
    answer is not about what was asked and the command fails."""
    wait = getattr(args, "wait", None)
    q = "?" + urllib.parse.urlencode({"wait": wait}) if wait else ""
    res = api(args, method, path + q, body,
              shape={**RECEIPT, **{k: type(v) for k, v in (asked or {}).items()}})
    for k, v in (asked or {}).items():
        if res[k] != v:
            raise ClientError(f"the admin API answered about {k} {res[k]!r}, not {v!r}")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(label(res) if callable(label) else label)
        print_receipt(res)
    warn_silent(args, res)
    return 0 if not res.get("applied", {}).get("pending") else 4


def warn_silent(args: argparse.Namespace, receipt: dict[str, Any]) -> None:
    """After a write's receipt: name on stderr the instances it could not count."""
    # (not patient: the write is done; a 429 here must neither hold the exit for its
    # Retry-After nor print 'nothing was done' under the receipt)
    silent = silent_instances(args, set(receipt["applied"].get("pending") or ()), False)
    if silent is None:
        print("killgate: WARNING: could not check for instances not heard from within the "
              "lease (the admin API refused the check: 429 too_many_attempts, a flood of "
              "token checks); the write above is done: see killgate status", file=sys.stderr)
    elif silent:
        names = ", ".join(clean_text(str(r.get("instance")), 128) for r in silent)
        print(f"killgate: WARNING: not counted above, not heard from within the lease: {names} "
              "(crashed, or cut off from the store and not enforcing this): see killgate status",
              file=sys.stderr)


def silent_instances(args: argparse.Namespace, known: set[str],
                     patient: bool = True) -> list[dict[str, Any]] | None:
    """The instances the store still holds a heartbeat of but has not heard from within
    the lease (`GET /v1/fleet`, not in `known`): crashed, or cut off from the store while
    serving on. Receipts and /v1/status count live ones only. Best effort: [] when the
    gateway cannot say (an older one), and not asked with a token that cannot read it (a
    refusal would be audited as authz_fail after every write of a killgate:kill token).
    None: refused with 429 too_many_attempts (not `patient`: not waited out)."""
    if not may_read(getattr(args, "token", None) or os.environ.get("KILLGATE_TOKEN")):
        return []
    try:
        answer = raw_call(args, "GET", "/v1/fleet", patient=patient)
    except ClientError as exc:
        return None if exc.kind == "too_many_attempts" else []
    rows = answer.body.get("instances") if answer.status == 200 else None
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, dict) and r.get("live") is False
            and not r.get("self") and r.get("instance") not in known]


def may_read(token: str | None) -> bool:
    """Whether a token's claims (read, not verified: the API verifies) grant
    killgate:read; True without a token (a proxy signs in) or with one not read here."""
    if not token:
        return True
    from gateway.admin.tokens import unverified_scopes

    scopes = unverified_scopes(token)
    return scopes is None or bool({"killgate:read", "killgate:admin"} & scopes)


def glass(args: argparse.Namespace) -> dict[str, Any]:
    """The `break_glass` field of a write, when --break-glass was given."""
    return {"break_glass": True} if getattr(args, "break_glass", False) else {}


def glass_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--break-glass", action="store_true",
                   help="skip a required approval (needs the killgate:breakglass scope; "
                        "loudly audited)")


def run(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`fn` as a command: a ClientError is printed (when it says anything) as its exit code;
    with --json also on standard output, as `{"error": {...}}`, so a script reading it gets
    JSON on every path."""
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except ClientError as exc:
            if str(exc):
                print(f"killgate: {exc}", file=sys.stderr)
                if getattr(args, "json", False):
                    err: dict[str, Any] = {"message": str(exc), "exit": exc.code}
                    if exc.status is not None:
                        err.update(status=exc.status, type=exc.kind)
                    print(json.dumps({"error": err}, indent=2))
            return exc.code

    return wrapped
