"""The CLI's state-changing commands: kill, unkill, rollback, promote, weights, release.

Owns their arguments, and the route commands' (rollback, promote, weights, release) body
and what the answer must echo (the route and action: an answer about anything else fails
the command); kill and unkill are cli/killcmds.py's. The call, the receipt and exit codes
are cli/client.py's.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from gateway.cli.client import (
    ClientError,
    duration_arg,
    glass,
    glass_option,
    quote,
    write,
)
from gateway.cli.killcmds import given, kill_command, unkill_command
from gateway.config_types import parse_duration
from gateway.domain.audit import clean_text

__all__ = ["add_write_commands"]

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
    given(args, "to")
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
    for name, fn, help_ in (("kill", kill_command, "stop traffic to a scope (global, route, version)"),
                            ("unkill", unkill_command, "lift a kill (the only way a kill is lifted)")):
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
