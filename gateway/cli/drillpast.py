"""`killgate drill restore` and `killgate drill history`: the commands about drills already
opened. Owns their output and exit codes (restore: 0 when the route is exactly as before
the drill and every instance it opened with, or live now, that answers proved it applied
the restore (control/drillbehind.py, as a drill's end asks), else 1; history: the table
of past drills, open ones, and the trend per kind and route) and the admin client every
drill command uses (`--admin`, `--token`, or KILLGATE_ADMIN_URL and KILLGATE_TOKEN). Talks
to the admin API only (control.drillload).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import urllib.parse
from typing import Any

import aiohttp

from gateway.cli.client import timeout_of
from gateway.cli.http import ClientError, admin_base, clean_token
from gateway.cli.shapes import expect
from gateway.control.drillbehind import Behind, behind, catch_up_for
from gateway.control.drillfleet import published, readyz_keys
from gateway.control.drillload import AdminClient, DrillApiError
from gateway.domain.audit import clean_text
from gateway.domain.drilldiff import differences
from gateway.domain.drillverdict import kept

__all__ = ["client", "failed", "history", "history_rows", "restore", "say", "trend"]

DEFAULT_ADMIN = "http://127.0.0.1:8081"
MEASURES = ("time_to_kill_ms", "time_to_failover_ms", "time_to_rollback_ms")
#: how long a restore waits for the store: longer than a store-loss drill's pause (its
#: hold, at most 60 s), which outlives a drill process that died during it
RETRY_FOR = 75.0


def say(msg: str) -> None:
    # (a terminal that hung up fails every write: a drill still restores after SIGHUP;
    # escaped: an API's error message, echoed here, must not drive the terminal)
    with contextlib.suppress(OSError):
        print(f"killgate drill: {clean_text(msg, 4096)}", file=sys.stderr, flush=True)


def failed(args: argparse.Namespace, code: int, lines: list[str], prefix: str = "") -> int:
    """A drill that did not run: each line on stderr, and with --json `{"error": ...}` on
    stdout (a script reading the report gets JSON on every path); `code` is the exit."""
    for line in lines:
        say(prefix + line)
    if getattr(args, "json", False):
        print(json.dumps({"error": {"message": "; ".join(prefix + ln for ln in lines),
                                    "exit": code}}, indent=2))
    return code


def client(args: argparse.Namespace, session: aiohttp.ClientSession) -> AdminClient:
    base = admin_base(getattr(args, "admin", None) or os.environ.get("KILLGATE_ADMIN_URL")
                      or DEFAULT_ADMIN)
    return AdminClient(session, base, clean_token(getattr(args, "token", None)
                                                  or os.environ.get("KILLGATE_TOKEN")),
                       timeout_of(args))


def _q(ident: str) -> str:
    """A drill id as one path segment: an id shaped like a path names no other endpoint."""
    return urllib.parse.quote(ident, safe="")


def _listing(got: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/drills's answer, checked before anything of it is printed."""
    expect(got, {"open": list, "history": list})
    for item in (*got["open"], *got["history"]):
        if not isinstance(item, dict):
            raise ClientError("unexpected answer from the admin API: a drill is not an object")
    for d in got["open"]:
        expect(d, {"id": str, "kind": str, "route": str, "actor": str, "started": str})
    return got


def _measure_of(summary: dict[str, Any]) -> dict[str, Any]:
    """The drill's own measure (p50, p99, max) from a recorded summary; {} if none."""
    return next((summary[k] for k in MEASURES if isinstance(summary.get(k), dict)), {})


async def _ended(api: AdminClient, drill: str) -> dict[str, Any] | None:
    """The drill.end event of `drill` among the last drills ended; None if not there."""
    past = _listing(await api.call("GET", "/v1/drills?limit=200"))
    return next((e for e in past["history"] if e.get("target", {}).get("drill") == drill),
                None)


async def _fleet(api: AdminClient) -> dict[str, Any]:
    """The instances heartbeating before the restore (their admin and data addresses) and
    the fleet's poll interval: whom the restore is checked with afterwards, as a drill's
    end checks it (control/drillbehind.py); {} when the admin API cannot say."""
    try:
        status = await api.call("GET", "/v1/status")
        cfg = await api.call("GET", "/v1/config")
    except (DrillApiError, ClientError):
        return {}
    insts = status.get("instances") if isinstance(status, dict) else None
    insts = insts if isinstance(insts, dict) else {}
    config = cfg.get("config") if isinstance(cfg, dict) else None
    state = config.get("state") if isinstance(config, dict) else None
    poll = state.get("poll_interval") if isinstance(state, dict) else None
    return {"started": sorted(insts), "admin_of": published(insts),
            "data_of": {n: i["data"] for n, i in insts.items()
                        if isinstance(i, dict) and isinstance(i.get("data"), str)},
            "poll": float(poll) if isinstance(poll, int | float) and not isinstance(
                poll, bool) and poll >= 0 else 0.25}


async def _check(api: AdminClient, drill: str, fleet: dict[str, Any],
                 out: dict[str, Any]) -> Behind | None:
    """Each instance of `fleet` asked whether it applied the restore (`out`: its answer),
    with the drill's /readyz proofs when the answer gave keys; said on stderr."""
    gen = out.get("generation")
    # (and those the drill opened with, its drill.start recorded: one cut off from the
    # store since has dropped out of the fleet once its lease ran out)
    raw = out.get("started_with")
    recorded = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(raw, dict) else {}
    if not (fleet or recorded) or not isinstance(gen, int) or isinstance(gen, bool):
        return None
    started = sorted(set(fleet.get("started", ())) | set(recorded))
    admin_of = {**{k: v for k, v in recorded.items() if v}, **fleet.get("admin_of", {})}
    keys = readyz_keys(out.get("readyz_keys"))
    found = await behind(api, started, admin_of, gen, drill, keys or None,
                         catch_up_for(fleet.get("poll", 0.25)), data_of=fleet.get("data_of"),
                         poll=fleet.get("poll", 0.25))
    for line in found.lines(gen):
        say(line)
    return found


async def restore(args: argparse.Namespace) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            api = client(args, session)
        except ClientError as exc:
            return failed(args, 1, [str(exc)])
        fleet = await _fleet(api)
        reason = args.reason or "restored with `killgate drill restore`"
        try:
            out = await api.call("POST", f"/v1/drills/{_q(args.id)}/restore", {"reason": reason},
                                 retry_for=RETRY_FOR, on_retry=say)
        except DrillApiError as exc:
            if exc.status != 404:
                return failed(args, 1, [str(exc)])
            try:
                done = await _ended(api, args.id)
            except (DrillApiError, ClientError) as why:
                return failed(args, 1, [f"drill {args.id} is not open ({exc}); its history "
                                        f"cannot be read: {why}"])
            if done is None:
                return failed(args, 1, [f"no drill {args.id}: not open, and not among the "
                                        "last drills ended"])
            verdict = (done.get("after") or {}).get("verdict")
            say(f"drill {args.id} ended already ({verdict}, {done.get('time')}); nothing to "
                "restore")
            if args.json:  # (exit 0: a script reading the JSON gets some)
                print(json.dumps({"id": args.id, "ended_already": {
                    "verdict": verdict, "time": done.get("time")}}, indent=2))
            return 0
        try:
            await api.call("POST", f"/v1/drills/{_q(args.id)}/end",
                           {"verdict": "aborted", "reason": reason,
                            "summary": {"restored_by": "killgate drill restore"}},
                           retry_for=RETRY_FOR, on_retry=say)
        except DrillApiError as exc:
            # (404: ended meanwhile, by the fleet past its deadline (drills.auto_restore_after)
            # or another restore: restored and closed, as asked)
            done = None
            if exc.status == 404:
                with contextlib.suppress(DrillApiError, ClientError):
                    done = await _ended(api, args.id)
            if done is None:
                return failed(args, 1, [f"drill {args.id} was restored, but its end could not "
                                        f"be recorded ({exc}): run this again"])
            say(f"drill {args.id} was ended meanwhile by {done.get('actor')} "
                f"({(done.get('after') or {}).get('verdict')}, {done.get('time')})")
        # (an instance cut off from the store drops out of the receipt once its lease runs
        # out, enforcing the drill's kill unnoticed: each is asked, as at a drill's end)
        found = await _check(api, args.id, fleet, out)
    # (as the drill's own verdict: the state as before, and applied by every instance; an
    # instance that has not applied the restore still enforces what the drill changed)
    pending = [str(i) for i in (out.get("applied") or {}).get("pending") or []]
    # (less those the check found running it since: the receipt waits a second, and an
    # instance still reconnecting after a store outage, live, acks it later; it was named
    # "not applied yet", the restore "NOT restored", exit 1, once the check had seen it)
    pending = [i for i in pending if found is None or i not in found.applied]
    if pending:
        say(f"the restore is not applied yet by {len(pending)} instance(s): "
            f"{', '.join(pending[:5])}{', ...' if len(pending) > 5 else ''}: what the drill "
            "changed may still be in force there; see killgate status")
    unconfirmed = found is not None and bool(found.late or found.problems())
    same = out.get("state") == out.get("before") and not pending and not unconfirmed
    if not same:  # (what the drill runner says too: a kill kept is someone else's, to leave)
        for line in kept(out) + differences(out.get("before"), out.get("state"), []):
            say(line)
    if args.json:
        print(json.dumps({"id": args.id, "restored": same, "undone": out.get("undone"),
                          "before": out.get("before"), "after": out.get("state"),
                          "pending": pending,
                          "restore_check": found.check() if found else None}, indent=2))
    else:
        for note in out.get("undone") or [{"nothing": "to undo"}]:
            print(" ".join(f"{k}={json.dumps(v)}" for k, v in note.items()))
        print(f"drill {args.id}: {'restored' if same else 'NOT restored'}: " + (
            "the route is exactly as before the drill" if same else
            "not applied by every instance" if pending or unconfirmed
            else "the route is not as before the drill"))
    return 0 if same else 1


def _cell(v: Any) -> str:
    """A number of a recorded summary as the history shows it ('-': none recorded)."""
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def history_rows(events: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'ended':24} {'drill':26} {'kind':10} {'route':16} {'verdict':8} "
             f"{'measure max ms':>14} {'leaks':>5} {'errors':>6}  actor"]
    for e in events:
        s = (e.get("after") or {}).get("summary") or {}
        m = _measure_of(s)
        t = e.get("target", {})
        lines.append(f"{e.get('time', ''):24} {t.get('drill', ''):26} {t.get('kind') or '':10} "
                     f"{t.get('route') or '':16} {(e.get('after') or {}).get('verdict', ''):8} "
                     f"{_cell(m.get('max')):>14} {_cell(s.get('leaks')):>5} "
                     f"{_cell(s.get('errors')):>6}  {e.get('actor', '')}")
    return lines


def trend(events: list[dict[str, Any]]) -> list[str]:
    """Per kind and route, oldest to newest: the slowest instance, and passes."""
    series: dict[str, list[tuple[str, Any]]] = {}
    for e in reversed(events):
        t, after = e.get("target", {}), e.get("after") or {}
        s = after.get("summary") or {}
        m = _measure_of(s)
        series.setdefault(f"{t.get('kind')} on {t.get('route')}", []).append(
            (after.get("verdict", "?"), m.get("max")))
    out = []
    for key, items in series.items():
        passed = sum(v == "passed" for v, _ in items)
        times = " → ".join("-" if x is None else f"{x:g}" for _, x in items)
        out.append(f"{key}: {passed}/{len(items)} passed; slowest instance (ms): {times}")
    return out


async def history(args: argparse.Namespace) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            got = _listing(await client(args, session).call("GET",
                                                             f"/v1/drills?limit={args.limit}"))
        except (DrillApiError, ClientError) as exc:
            return failed(args, 1, [str(exc)])
    if args.json:
        print(json.dumps(got, indent=2))
        return 0
    out = []
    for d in got["open"]:
        overdue = f" (OVERDUE: killgate drill restore {d['id']})" if d.get("overdue") else ""
        out.append(f"OPEN {d['id']} {d['kind']} on {d['route']} by {d['actor']} since "
                   f"{d['started']}{overdue}")
    if not got["history"] and not got["open"]:  # (a header over nothing reads as broken)
        print("no drills yet: try `killgate drill kill --route ROUTE --version VERSION` on a "
              "drill route (see README, Recovery drills)")
        return 0
    try:  # (the answer's fault, named, never a traceback: a target that is not an object)
        out += history_rows(got["history"])
        lines = trend(got["history"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return failed(args, 1, [f"unexpected answer from the admin API ({type(exc).__name__}: "
                                f"{str(exc)[:80]})"])
    if lines:
        out += ["", "trend:", *("  " + t for t in lines)]
    # (escaped, each line: an actor, a route or a drill id is text a caller chose)
    print("\n".join(clean_text(line, 4096) for line in out))
    return 0
