"""The admin client commands of the CLI (CONTRACT §1): thin calls to the /v1 API.

Owns argument shapes, human-readable tables, `--json` output and exit codes of
`status`, `kill`, `unkill`, `rollback`, `promote`, `weights`, `release`, `audit`,
`audit verify`, `diff` and `token`. The HTTP call and the check of every answer live in
cli/http.py. Exit codes: 0 done, 1 error (or an answer that is not what was asked),
3 an approval was requested (nothing changed yet), 4 not yet applied by every instance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from typing import Any

from gateway.cli.approvals import add_approval_commands
from gateway.cli.http import APPROVAL, RECEIPT, ClientError, Shape, call, expect
from gateway.domain.audit import clean_text
from gateway.domain.statedoc import kill_key

__all__ = ["add_client_commands"]

DEFAULT_ADMIN = "http://127.0.0.1:8081"
STATUS: Shape = {"instance": str, "generation": int, "routes": dict, "kills": list}
AUDIT_PAGE: Shape = {"events": list, "next": (str, type(None))}


def _common(p: argparse.ArgumentParser, top: bool = False) -> None:
    d = None if top else argparse.SUPPRESS
    p.add_argument("--admin", default=d, metavar="URL",
                   help=f"admin API (default $KILLGATE_ADMIN_URL or {DEFAULT_ADMIN})")
    p.add_argument("--token", default=d, help="bearer token (default $KILLGATE_TOKEN)")
    p.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="machine-readable output")


def _call(args: argparse.Namespace, method: str, path: str,
          body: dict[str, Any] | None = None, shape: Shape | None = None) -> dict[str, Any]:
    """One API call answered 200, its body checked against `shape`. An approval request
    (202) is printed and ends the command with exit 3: nothing was changed yet."""
    base = (getattr(args, "admin", None) or os.environ.get("KILLGATE_ADMIN_URL")
            or DEFAULT_ADMIN).rstrip("/")
    token = getattr(args, "token", None) or os.environ.get("KILLGATE_TOKEN")
    answer = call(base, token, method, path, body)
    if answer.status == 202 and body is not None:
        pending = expect(answer.body, APPROVAL)["approval"]
        if getattr(args, "json", False):
            print(json.dumps(answer.body, indent=2))
        else:
            print(f"approval {pending['id']} requested: {pending['action']} needs "
                  f"{pending['needs']} principals, approved by "
                  f"{', '.join(map(str, pending['approved_by']))}; expires {pending['expires']}"
                  f"\nnothing is changed until another principal runs: killgate approve "
                  f"{pending['id']}")
        raise ClientError("", code=3)
    if answer.status != 200:
        raise ClientError(f"the admin API answered {answer.status}, not 200")
    return expect(answer.body, shape) if shape is not None else answer.body


def _wait_q(args: argparse.Namespace) -> str:
    return "?" + urllib.parse.urlencode({"wait": args.wait}) if getattr(args, "wait", None) else ""


def _table(rows: list[list[str]]) -> str:
    """Aligned columns; control characters in cells are shown escaped, so a value from the
    audit trail cannot move the cursor, color the terminal or forge a row."""
    if not rows:
        return ""
    cells = [[clean_text(str(c), 4096) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def _print_receipt(res: dict[str, Any]) -> None:
    ap = res.get("applied", {})
    line = (f"generation {res.get('generation')}: applied by {ap.get('acked')}/"
            f"{ap.get('instances')} instance(s) in {ap.get('elapsed_ms')} ms")
    if ap.get("pending"):
        line += f"; NOT YET by: {', '.join(ap['pending'])}"
    print(line)


# ---------------------------------------------------------------------------- commands


def _status(args: argparse.Namespace) -> int:
    st = _call(args, "GET", "/v1/status", shape=STATUS)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    store = st.get("store") or {}
    cfg = st.get("config") or {}
    print(f"instance {st.get('instance')}  generation {st.get('generation')}  store "
          f"{store.get('backend')} connected={store.get('connected')} "
          f"staleness={store.get('staleness_ms')}ms policy={store.get('policy')}"
          + ("  FAIL-CLOSED" if store.get("fail_closed") else ""))
    print(f"config {cfg.get('digest', '')[:19]}…"
          + (f"  LAST RELOAD FAILED: {cfg['last_error']}" if cfg.get("last_error") else ""))
    kills = st.get("kills") or []
    if kills:
        print("\nKILLS")
        rows = [["scope", "route", "version", "by", "since", "reason"]]
        rows += [[k["scope"], k.get("route") or "-", k.get("version") or "-", k["actor"],
                  k["time"], k["reason"]] for k in kills]
        print(_table(rows))
    instances = st.get("instances") or {}
    if instances:
        print("\nINSTANCES")
        rows = [["instance", "generation", "config", "heard"]]
        rows += [[name, str(i.get("generation")), (i.get("config") or "")[:19],
                  f"{i.get('seen_s_ago', 0):.1f}s ago"] for name, i in sorted(instances.items())]
        print(_table(rows))
    print("\nROUTES")
    rows = [["route", "version", "config w", "effective w", "healthy", "killed", "stable"]]
    for name, r in (st.get("routes") or {}).items():
        for vname, v in r["versions"].items():
            rows.append([name + (" (latched)" if r.get("latched") else ""), vname,
                         f"{v['configured_weight']:g}", f"{v['effective_weight']:g}",
                         "yes" if v["healthy"] else "NO", "YES" if v["killed"] else "no",
                         "*" if r["stable"] == vname else ""])
    print(_table(rows))
    return 0


def _selector(args: argparse.Namespace) -> dict[str, Any]:
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


def _glass(args: argparse.Namespace) -> dict[str, Any]:
    return {"break_glass": True} if getattr(args, "break_glass", False) else {}


def _kill(args: argparse.Namespace) -> int:
    body = {**_selector(args), "reason": args.reason, "abort_inflight": not args.keep_inflight}
    return _route_write(args, "POST", "/v1/kill", body,
                        lambda res: f"killed {res['kill']}" if res.get("changed", True)
                        else f"{res['kill']} was already killed (unchanged)",
                        {"kill": _key(body)})


def _unkill(args: argparse.Namespace) -> int:
    body = {**_selector(args), "reason": args.reason, **_glass(args)}
    return _route_write(args, "POST", "/v1/unkill", body, lambda res: f"lifted {res['unkill']}",
                        {"unkill": _key(body)})


def _route_write(args: argparse.Namespace, method: str, path: str, body: dict[str, Any],
                 label: str | Any, asked: dict[str, Any] | None = None) -> int:
    """One write: the receipt as a line (or JSON); exit 4 if some instance had not applied
    it. `asked`: fields the answer must echo (the kill key, the route and action), or the
    answer is not about what was asked and the command fails."""
    res = _call(args, method, path + _wait_q(args), body,
                shape={**RECEIPT, **{k: type(v) for k, v in (asked or {}).items()}})
    for k, v in (asked or {}).items():
        if res[k] != v:
            raise ClientError(f"the admin API answered about {k} {res[k]!r}, not {v!r}")
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(label(res) if callable(label) else label)
        _print_receipt(res)
    return 0 if not res.get("applied", {}).get("pending") else 4


def _rollback(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason, **_glass(args)}
    if args.to:
        body["to"] = args.to
    return _route_write(args, "POST", f"/v1/routes/{_q(args.route)}/rollback", body,
                        f"rolled back {args.route}" + (f" to {args.to}" if args.to else ""),
                        {"route": args.route, "action": "rollback"})


def _promote(args: argparse.Namespace) -> int:
    return _route_write(args, "POST", f"/v1/routes/{_q(args.route)}/promote",
                        {"version": args.version, "reason": args.reason, **_glass(args)},
                        f"promoted {args.version} on {args.route}",
                        {"route": args.route, "action": "promote"})


def _weights(args: argparse.Namespace) -> int:
    weights: dict[str, float] = {}
    for pair in args.pairs:
        name, sep, w = pair.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            weights[name] = float(w)
        except ValueError:
            raise ClientError(f"{pair!r} is not VERSION=WEIGHT") from None
    return _route_write(args, "PUT", f"/v1/routes/{_q(args.route)}/weights",
                        {"weights": weights, "reason": args.reason, **_glass(args)},
                        f"weights of {args.route}: " + ", ".join(f"{k}={v:g}" for k, v in
                                                                 weights.items()),
                        {"route": args.route, "action": "weights"})


def _release(args: argparse.Namespace) -> int:
    return _route_write(args, "POST", f"/v1/routes/{_q(args.route)}/release",
                        {"reason": args.reason, **_glass(args)},
                        f"released {args.route} to its config file",
                        {"route": args.route, "action": "release"})


def _audit(args: argparse.Namespace) -> int:
    if args.action == "verify":
        return _audit_verify(args)
    res = _call(args, "GET", f"/v1/audit?limit={args.limit}", shape=AUDIT_PAGE)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    rows = [["time", "actor", "action", "target", "reason"]]
    for ev in res.get("events", []):
        tgt = ev.get("target") or {}
        actor, action = str(ev.get("actor", "")), str(ev.get("action", ""))
        if "attempts" in ev:  # a tally of denied calls: from where, and how many
            actor = f"{actor} ({ev.get('source', '?')})"
            action = f"{action} x{ev['attempts']}"
        if "path" in tgt:
            target = f"{tgt.get('method', '')} {tgt['path']}"
        else:
            target = "/".join(str(v) for v in tgt.values() if v)
        rows.append([ev.get("time", ""), actor, action, target, ev.get("reason", "")])
    print(_table(rows))
    return 0


def _all_events(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    """Every event, oldest first, and the head the store recorded (read before the first
    page, so the events include it)."""
    events: list[dict[str, Any]] = []
    before: str | None = None
    head: str | None = None
    while True:
        q = "?limit=1000" + (f"&before={urllib.parse.quote(before)}" if before else "")
        page = _call(args, "GET", "/v1/audit" + q, shape=AUDIT_PAGE)
        if before is None:
            head = page.get("head")
        events.extend(page.get("events", []))
        before = page.get("next")
        if not before:
            return list(reversed(events)), head


def _audit_verify(args: argparse.Namespace) -> int:
    from gateway.cli.auditverify import verify

    return verify(args, _all_events)  # (gateway/cli/auditverify.py)


def _token(args: argparse.Namespace) -> int:
    from gateway.admin.auth import mint
    from gateway.config import DEFAULT_SECRET_ENV, AuthConfig, parse_duration
    from gateway.configfile import load_config

    issuer = audience = None
    env = args.secret_env
    lifetime = AuthConfig().max_token_lifetime
    if args.config:
        auth = load_config(args.config).config.admin.auth
        lifetime = auth.max_token_lifetime
        issuer, audience = auth.issuer, auth.audience
        if auth.hs256_secret_file:
            secret = load_config(args.config).resolve(auth.hs256_secret_file).read_text().strip()
        else:
            env = env or auth.secret_env
            secret = os.environ.get(env, "")
    else:
        env = env or DEFAULT_SECRET_ENV
        secret = os.environ.get(env, "")
        issuer, audience = args.issuer, args.audience
    if not secret:
        raise ClientError(f"no secret: set {env} (or give -c FILE naming the secret)")
    try:
        ttl = parse_duration(args.ttl)
        if ttl > lifetime:
            raise ValueError(f"--ttl {args.ttl} is longer than admin.auth.max_token_lifetime "
                             f"({lifetime:g}s): the gateway would refuse the token")
        print(mint(secret, args.subject, args.scope, ttl, issuer, audience))
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    return 0


def _diff(args: argparse.Namespace) -> int:
    """What FILE would change against a running gateway (or --against FILE2): exit 2 if any."""
    from gateway.configfile import load_config
    from gateway.domain.diff import config_dict, diff_configs, diff_rows
    from gateway.errors import ConfigError

    try:
        loaded = load_config(args.file)
        new, new_digest = config_dict(loaded.config), loaded.digest
        old_digest: str | None = None
        if args.against:
            against = load_config(args.against)
            old, old_digest = config_dict(against.config), against.digest
            where = args.against
        else:
            running = _call(args, "GET", "/v1/config", shape={"digest": str, "config": dict})
            old, old_digest = running["config"], running["digest"]
            where = "the running gateway"
    except ConfigError as exc:
        raise ClientError("invalid config: " + "; ".join(str(p) for p in exc.problems)) from None
    d = diff_configs(old, new)
    changed = bool(d["routes"] or d["settings"])
    if args.json:
        print(json.dumps({"changed": changed, **d}, indent=2))
    elif not changed:
        print(f"no changes against {where}")
        if old_digest is not None and old_digest != new_digest:
            print("note: the files differ, in comments or in secrets (shown redacted here: a "
                  "changed password or webhook URL is not visible)")
    else:
        print(f"{args.file} against {where}:")
        print(_table([["route", "change", "before", "after"], *diff_rows(d)]))
    return 2 if changed else 0


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _run(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except ClientError as exc:
            if str(exc):
                print(f"killgate: {exc}", file=sys.stderr)
            return exc.code

    return wrapped


def _glass_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--break-glass", action="store_true",
                   help="skip a required approval (needs the killgate:breakglass scope; "
                        "loudly audited)")


def add_client_commands(sub: Any) -> None:
    def cmd(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        _common(p)
        p.set_defaults(fn=_run(fn))
        return p

    cmd("status", _status, "what the gateway enforces: routes, weights, kills, store")
    add_approval_commands(cmd)
    for name, fn, help_ in (("kill", _kill, "stop traffic to a scope (global, route, version)"),
                            ("unkill", _unkill, "lift a kill (the only way a kill is lifted)")):
        p = cmd(name, fn, help_)
        p.add_argument("--global", dest="all", action="store_true", help="every route")
        p.add_argument("--route", help="route name")
        p.add_argument("--version", help="version name (with --route)")
        p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
        p.add_argument("--wait", default=None, help="how long to wait for every instance (1s)")
        if name == "kill":
            p.add_argument("--keep-inflight", action="store_true",
                           help="let responses already streaming finish")
        else:
            _glass_option(p)
    p = cmd("rollback", _rollback, "make the previous (or --to) version stable with 100%%")
    p.add_argument("route")
    p.add_argument("--to", help="version to roll back to (default: previous stable)")
    p.add_argument("--reason", required=True)
    p.add_argument("--wait", default=None)
    _glass_option(p)
    p = cmd("promote", _promote, "make VERSION stable with 100%% of traffic")
    p.add_argument("route")
    p.add_argument("version")
    p.add_argument("--reason", required=True)
    p.add_argument("--wait", default=None)
    _glass_option(p)
    p = cmd("weights", _weights, "override a route's weights: V=W [V=W ...]")
    p.add_argument("route")
    p.add_argument("pairs", nargs="+", metavar="V=W")
    p.add_argument("--reason", required=True)
    p.add_argument("--wait", default=None)
    _glass_option(p)
    p = cmd("release", _release, "drop a route's runtime overrides (the file governs again)")
    p.add_argument("route")
    p.add_argument("--reason", required=True)
    p.add_argument("--wait", default=None)
    _glass_option(p)
    p = cmd("audit", _audit, "show the audit trail (newest first), or 'audit verify'")
    p.add_argument("action", nargs="?", choices=["verify"],
                   help="check the chain: links, hashes, MACs (with a key), anchored head")
    p.add_argument("--limit", type=int, default=20)
    from gateway.cli.auditverify import add_verify_arguments

    add_verify_arguments(p)
    p = cmd("diff", _diff, "what a config file would change (exit 2 when something would)")
    p.add_argument("file")
    p.add_argument("--against", metavar="FILE2",
                   help="compare with another file instead of the running gateway")
    p = sub.add_parser("token", help="mint an HS256 admin token (development and tests)")
    p.add_argument("--subject", required=True)
    p.add_argument("--scope", required=True,  # (every scope of admin.auth.SCOPES)
                   help="space-separated: killgate:read, killgate:kill, killgate:rollout, "
                        "killgate:alert (Alertmanager's webhook only), killgate:drill, "
                        "killgate:admin (all but break-glass), killgate:breakglass; "
                        'e.g. "killgate:kill killgate:read"')
    p.add_argument("--ttl", default="15m")
    p.add_argument("-c", "--config", help="take issuer, audience and secret from this config")
    p.add_argument("--secret-env", help="environment variable holding the secret")
    p.add_argument("--issuer", default="killgate")
    p.add_argument("--audience", default="killgate-admin")
    p.set_defaults(fn=_run(_token))
