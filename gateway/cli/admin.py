"""The admin client commands of the CLI (CONTRACT §1): thin calls to the /v1 API.

Owns the list of client subcommands and the read commands `status`, `audit` and
`audit verify`; the writes are in cli/writes.py, approvals in cli/approvals.py, `token`
and `diff` in cli/configtools.py; the call, tables and exit codes (0 done, 1 error,
3 approval requested, 4 not yet applied everywhere) in cli/client.py.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from gateway.cli.approvals import add_approval_commands
from gateway.cli.client import ClientError, api, common_options, run, silent_instances, table
from gateway.cli.configtools import add_config_commands
from gateway.cli.shapes import Shape
from gateway.cli.statusbuilds import builds_line
from gateway.cli.statuscells import healthy_cell, shadow_cell
from gateway.cli.statusstore import replicas_line, store_reach
from gateway.cli.statuswarn import instance_rows, latched_line, store_warnings
from gateway.cli.writes import add_write_commands
from gateway.domain.audit import clean_text

__all__ = ["add_client_commands"]

STATUS: Shape = {"instance": str, "generation": int, "routes": dict, "kills": list}
AUDIT_PAGE: Shape = {"events": list, "next": (str, type(None))}


def _status(args: argparse.Namespace) -> int:
    st = api(args, "GET", "/v1/status", shape=STATUS)
    silent = silent_instances(args, set(st.get("instances") or {}))
    if args.json:  # (the SILENT rows of the text too: a script reads them here)
        print(json.dumps({**st, "silent_instances": silent or []}, indent=2))
        return 0
    print(_rendered(lambda body: _status_text(body, silent), st))
    return 0


def _rendered(render: Callable[[dict[str, Any]], str], body: dict[str, Any]) -> str:
    """`render(body)`, whole, or the command fails: a field the table needs that is missing
    or of another type is the answer's fault, named as such, never a traceback."""
    try:
        return render(body)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise ClientError(f"unexpected answer from the admin API ({type(exc).__name__}: "
                          f"{str(exc)[:80]})") from None


def _status_text(st: dict[str, Any], silent: list[dict[str, Any]] | None = None) -> str:
    out: list[str] = []
    store = st.get("store") or {}
    cfg = st.get("config") or {}
    reach = store_reach(store)
    out.append(f"instance {st.get('instance')}  generation {st.get('generation')}  store "
               f"{store.get('backend')} {reach}, "
               f"state {store.get('staleness_ms')} ms old, on_unavailable {store.get('policy')}"
               + ("  FAIL-CLOSED" if store.get("fail_closed") else ""))
    out.append(f"config {(cfg.get('digest') or '')[:19]}…"
               + (f"  LAST RELOAD FAILED: {cfg['last_error']}" if cfg.get("last_error") else "")
               + (f"  RELOAD WAITING: {cfg['waiting']}" if cfg.get("waiting") else "")
               + (f"  RESTART REQUIRED for: {', '.join(map(str, cfg['restart_required']))}"
                  if cfg.get("restart_required") else ""))
    out += [f"RELOAD WARNING: {w}" for w in cfg.get("warnings") or () if isinstance(w, str)]
    out += [f"AUDIT PENDING: config.reload {str(a.get('from'))[:19]}… -> "
            f"{str(a.get('to'))[:19]}… changed at {a.get('changed_at')}, not yet recorded "
            f"({a.get('tries')} tries; the store: {a.get('error')})"
            for a in cfg.get("audit_pending") or () if isinstance(a, dict)]
    dropped = cfg.get("audit_dropped")
    if isinstance(dropped, dict):
        got = dropped.get("last")
        last: dict[str, Any] = got if isinstance(got, dict) else {}
        why = last.get("error") or "more changes waited for the store than are kept"
        out.append(f"AUDIT DROPPED: {dropped.get('count')} config change(s) since this "
                   f"instance started are in no audit event (the last: "
                   f"{str(last.get('from'))[:19]}… -> {str(last.get('to'))[:19]}… changed at "
                   f"{last.get('changed_at')}; {why}); the log says each "
                   "(config_reload_audit_dropped, config_reload_audit_failed)")
    out += [line] if (line := replicas_line(store)) else []
    out += store_warnings(st)
    # (escaped like the tables: a reload's error quotes the file, which a pull request
    # may have written, and the instance name comes from the fleet)
    out = [clean_text(line, 4096) for line in out]
    kills = st.get("kills") or []
    if kills:
        out.append("\nKILLS")
        rows = [["scope", "route", "version", "by", "since", "reason"]]
        rows += [[k["scope"], k.get("route") or "-", k.get("version") or "-", k["actor"],
                  k["time"], k["reason"]] for k in kills]
        out.append(table(rows))
        gone = [k for k in kills if k.get("routed") is False]
        if gone:
            out.append("NOT ROUTED: the config has no " + ", ".join(
                f"version {k['route']}/{k['version']}" if k.get("version")
                else f"route {k['route']}"
                for k in gone) + ": these kills stop nothing until the name comes back")
    orphans = [o for o in st.get("overrides_unrouted") or () if isinstance(o, dict)]
    if orphans:
        out.append(clean_text("LATCHED, NOT ROUTED: the config has no " + ", ".join(
            f"route {o.get('route')} ({o.get('kind')} by {o.get('actor')}, {o.get('time')})"
            for o in orphans) + ": these overrides are in force again if the name comes back; "
            "`killgate release ROUTE` drops one", 4096))
    if st.get("instances") or silent:
        out.append("\nINSTANCES")
        out.append(table(instance_rows(st, silent or [])))
        out += [clean_text(line, 4096) for line in builds_line(st)]
    elif store.get("newer_version"):
        out.append("\nINSTANCES: unknown (the store's document is a newer version's)")
    elif store.get("answering"):
        out.append("\nINSTANCES: unknown (this instance cannot verify the store's document)")
    elif store.get("connected") is False and store.get("pushes") != "cut":
        out.append("\nINSTANCES: unknown (this instance cannot reach the store)")
    out.append("\nROUTES")
    # the file's relative weight beside the share of traffic it gets now (a percent): two
    # units, which "config w" and "effective w" hid (40 beside 50 read as the same scale)
    rows = [["route", "version", "weight", "share %", "healthy", "killed", "stable"]]
    for name, r in (st.get("routes") or {}).items():
        for vname, v in r["versions"].items():
            rows.append([name + _drill_of(r) + _latch(r), vname,
                         f"{v['configured_weight']:g}", f"{v['effective_weight']:g}",
                         healthy_cell(v), "YES" if v["killed"] else "no",
                         "*" if r["stable"] == vname else shadow_cell(r, vname, v)])
    out.append(table(rows))
    for name, r in (st.get("routes") or {}).items():
        if line := latched_line(name, r):
            out.append(line)
        if r.get("rolled_off"):
            out.append(clean_text(f"ROLLED OFF: route {name}: " + ", ".join(
                f"{x.get('version')} ({x.get('kind')} by {x.get('actor')}, {x.get('time')})"
                for x in r["rolled_off"] if isinstance(x, dict))
                + ": never the target of a rollback without --to, nor of an automatic one, "
                  "until promote or weights name it", 4096))
        if r.get("override_unservable"):
            missing = ", ".join(map(str, r["override_unservable"]))
            out.append(clean_text(
                f"NOT SERVING: route {name} is latched to {missing}, which this instance's "
                f"config does not have: it answers its fallback (else 503) until `killgate "
                f"release {name}` or a config with {missing}", 4096))
        elif r.get("override_missing"):
            missing = ", ".join(map(str, r["override_missing"]))
            out.append(clean_text(
                f"PARTLY SERVING: route {name}'s latched override gives traffic to {missing}, "
                f"which this instance's config does not have: its other versions take that "
                f"share here (see 'share %') until `killgate release {name}` or a config "
                f"with {missing}", 4096))
    return "\n".join(out)


def _audit(args: argparse.Namespace) -> int:
    from gateway.cli.audittrim import trim, trim_options_alone

    trim_options_alone(args)
    if args.action == "verify":
        return _audit_verify(args)
    if args.action == "trim":
        return trim(args)  # (gateway/cli/audittrim.py)
    res = api(args, "GET", f"/v1/audit?limit={args.limit}", shape=AUDIT_PAGE)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(_rendered(_audit_text, res))
    return 0


def _audit_text(res: dict[str, Any]) -> str:
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
        rows.append([ev.get("time", ""), actor, action + _marks(ev), target,
                     ev.get("reason", "")])
    return table(rows)


def _marks(ev: dict[str, Any]) -> str:
    """What the console marks beside an action (ui/js/audit.js `marks`) and the table left
    out: a write that skipped its approval, who approved one, and a local kill's own time and
    instance (its event is written at the merge, when the store came back: the time column
    alone put the kill up to the whole outage late)."""
    out = " BREAK GLASS" if ev.get("break_glass") is True else ""
    ap = ev.get("approval")
    if isinstance(ap, dict) and isinstance(ap.get("approved_by"), list):
        out += f" (approved by {', '.join(str(p) for p in ap['approved_by'])})"
    local = ev.get("local")
    if isinstance(local, dict):
        out += (f" (LOCAL: taken {local.get('taken', '?')} on {local.get('instance', '?')}, "
                "merged into the store at this time)")
    return out


def _all_events(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    """Every event, oldest first, and the head the store recorded (read before the first
    page, so the events include it)."""
    events: list[dict[str, Any]] = []
    before: str | None = None
    head: str | None = None
    seen: set[str] = set()
    while True:
        q = "?limit=1000" + (f"&before={urllib.parse.quote(before)}" if before else "")
        page = api(args, "GET", "/v1/audit" + q, shape=AUDIT_PAGE)
        if before is None:
            head = page.get("head")
        events.extend(page.get("events", []))
        before = page.get("next")
        if not before:
            return list(reversed(events)), head
        if before in seen or not page["events"]:  # (else read forever, growing)
            raise ClientError("unexpected answer from the admin API: its audit pages do not "
                              "end (a page " + ("without events" if not page["events"] else
                              "already read") + " says there is more); the trail was not "
                              "checked")
        seen.add(before)


def _audit_verify(args: argparse.Namespace) -> int:
    from gateway.cli.auditverify import verify

    return verify(args, _all_events)  # (gateway/cli/auditverify.py)


def add_client_commands(sub: Any) -> None:
    def cmd(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        common_options(p)
        p.set_defaults(fn=run(fn))
        return p

    cmd("status", _status, "what the gateway enforces: routes, weights, kills, store")
    add_approval_commands(cmd)
    add_write_commands(cmd)
    p = cmd("audit", _audit, "show the audit trail (newest first), 'audit verify', or "
                             "'audit trim'")
    p.add_argument("action", nargs="?", choices=["verify", "trim"],
                   help="verify: check the chain: links, hashes, MACs (with a key), anchored "
                        "head; trim: trim the trail to state.audit_retention's bounds now "
                        "(scope killgate:admin)")
    p.add_argument("--limit", type=int, default=20,
                   help="events shown, newest first: 1-1000 (20); not with verify")
    from gateway.cli.auditverify import add_verify_arguments

    add_verify_arguments(p)
    from gateway.cli.audittrim import add_trim_arguments

    add_trim_arguments(p)
    from gateway.cli.statevouch import add_state_commands

    add_state_commands(cmd)
    add_config_commands(cmd, sub)


def _drill_of(route: dict[str, Any]) -> str:
    """A drill route's mark: only drills' requests reach it (it sorts before its route)."""
    return f" (drills of {route['drill_for']})" if isinstance(route.get("drill_for"), str) else ""


def _latch(route: dict[str, Any]) -> str:
    """How the ROUTES table marks a latched route: whose latch, when an open drill's (its
    restore undoes it; `over latch`: the restore puts the one before back)."""
    if not route.get("latched"):
        return ""
    ov = route.get("override")
    drill = ov.get("drill") if isinstance(ov, dict) else None
    if not isinstance(drill, dict):
        return " (latched)"
    return (f" (latched: drill {drill.get('id')}"
            + (", over latch)" if drill.get("over_latch") else ")"))
