"""`killgate drill` end to end (control/drills.py, cli/drill.py): each drill kind against a
fleet of three `killgate serve` processes sharing a real redis-server, in front of real
model servers (the demo's, in their own processes). The drill runs as the real CLI
process; an independent client observes every instance meanwhile, and the test compares
what it saw with the report and checks the fleet is exactly as before. Drills interrupted
or refused (SIGINT, SIGKILL, a failed steady-state check, an abort condition, a production
route): tests/test_drills_interrupted.py, on a fleet of its own.

The fleet is shared by the module's tests (it takes seconds to start); every test leaves
it as it found it, which is what the tests check anyway. The last test reads the history
and metrics the drills above left.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import ClientSession

from tests.conftest import RedisServer
from tests.drillfleet import (  # noqa: F401  (fleet_fixture: the module's fleet)
    Fleet,
    audit,
    fleet_fixture,
    fleet_state,
    settled_state,
    token,
)
from tests.drillobserver import Observer, agree
from tests.drillrig import FAST, Drill
from tests.test_cli import acli

DRILL_HDR = {"x-killgate-drill-route": "1"}


async def test_kill_drill_agrees_with_an_independent_client_and_restores(
        fleet: Fleet, session: ClientSession) -> None:
    before = await settled_state(session, fleet)
    obs = Observer(session, fleet.urls, {**DRILL_HDR, "x-killgate-pin": "v2"})
    obs.start()
    drill = Drill(fleet, "kill", "--route", "iris-drill", "--version", "v2", *FAST)
    rc, report, err = await drill.result()
    seen = await obs.stop()
    assert rc == 0, err
    assert report is not None and report["verdict"] == "passed", report
    assert report["leaks"] == 0 and report["errors"] == 0 and report["restored"] is True
    assert len(report["instances"]) == 3
    assert set(report["time_to_kill_ms"]) == {"p50", "p99", "max"}
    agree(report, seen, "time_to_kill_ms", lambda x: x.decision == "failover")
    # the independent client saw no answer from v2 between the receipt and the restore
    t_done = report["t0_unix"] + report["marks_ms"]["inject_done"] / 1000
    t_restore = report["t0_unix"] + report["marks_ms"]["restore_sent"] / 1000
    assert not [x for x in seen if t_done <= x.sent < t_restore and x.version == "v2"]
    # (a request in flight to v2 when the kill lands is cut: 503 `killed`, as a kill says)
    assert all(x.status == 200 or x.decision == "killed" for x in seen), \
        [x for x in seen if x.status != 200][:5]
    assert await fleet_state(session, fleet) == before
    events = await audit(session, fleet, 20)
    mine = [e["action"] for e in events if e.get("drill") == report["id"]]
    assert mine == ["drill.end", "drill.restore", "kill", "drill.start"]
    # the files: report, summary, picture
    files = sorted(p.suffix for p in (fleet.tmp / "reports").glob(report["id"] + ".*"))
    assert files == [".json", ".md", ".svg"]


async def test_rollback_drill(fleet: Fleet, session: ClientSession) -> None:
    before = await settled_state(session, fleet)
    obs = Observer(session, fleet.urls, DRILL_HDR)
    obs.start()
    rc, report, err = await Drill(fleet, "rollback", "--route", "iris-drill", "--to", "v1",
                                  *FAST).result()
    seen = await obs.stop()
    assert rc == 0 and report is not None, err
    assert report["verdict"] == "passed" and report["to"] == "v1", report
    assert report["restored"] and report["leaks"] == 0
    agree(report, seen, "time_to_rollback_ms", lambda x: x.version == "v1", rollback=True)
    assert await fleet_state(session, fleet) == before


async def test_failover_drill_never_touches_user_traffic(fleet: Fleet,
                                                         session: ClientSession) -> None:
    before = await settled_state(session, fleet)

    async def faults() -> list[float]:
        out = []
        for g in fleet.gateways:
            async with session.get(g.admin + "/metrics") as r:
                text = await r.text()
            out.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("killgate_upstream_errors_total{")
                           and 'kind="drill_fault"' in line))
        return out

    faults_before = await faults()
    # users: the drill route's own versions pinned to v2 (no token), and the production route
    users = Observer(session, fleet.urls, {**DRILL_HDR, "x-killgate-pin": "v2"})
    prod = Observer(session, fleet.urls, {"x-killgate-pin": "v2"})
    users.start()
    prod.start()
    rc, report, err = await Drill(fleet, "failover", "--route", "iris-drill", "--version",
                                  "v2", *FAST).result()
    seen = await users.stop() + await prod.stop()
    assert rc == 0 and report is not None, err
    assert report["verdict"] == "passed", report
    assert all(r["time_to_failover_ms"] is not None for r in report["instances"])
    # no user request met the fault: every one answered by v2, pinned, 200
    assert seen and all((x.status, x.version, x.decision) == (200, "v2", "pinned")
                        for x in seen), [x for x in seen if x.version != "v2"][:3]
    # every drill answer that failed over is a fault the gateways counted (and no more)
    met = [a - b for a, b in zip(await faults(), faults_before, strict=True)]
    by_url = {g.url: m for g, m in zip(fleet.gateways, met, strict=True)}
    for row in report["instances"]:
        assert by_url[row["instance"]] == row["showed"], (row, by_url)
    assert await fleet_state(session, fleet) == before


async def test_store_loss_on_a_redis_that_is_not_the_fleets_is_skipped(
        fleet: Fleet, second_redis: RedisServer) -> None:
    """--store names the redis to pause (CLIENT PAUSE ALL stops every client of it): one
    that holds no state of this fleet (a wrong URL: another team's redis) is not paused,
    and no drill opens."""
    second_redis.cmd("SET", "someone-elses", "data")
    rc, report, err = await Drill(fleet, "store-loss", "--route", "iris-drill", "--version",
                                  "v2", "--store", second_redis.url, *FAST).result()
    assert rc == 3 and report is not None and report["verdict"] == "skipped", err
    assert report["id"] is None and "not the fleet's store" in report["reasons"][0], report
    assert "kgdrill:state" in report["reasons"][0]


async def test_a_store_that_refuses_the_pause_ends_the_drill_aborted(
        fleet: Fleet, session: ClientSession) -> None:
    """A redis that refuses CLIENT PAUSE (an ACL, a managed redis that has no such
    command): the drill is restored and ended as aborted, never left open (the next drill
    on the route would be refused until someone ran `killgate drill restore`). (Before the
    store-loss drill that passes: the last result of the kind is what the metrics show.)"""
    fleet.redis.cmd("ACL", "SETUSER", "nopause", "on", ">pw", "~*", "&*", "+@all", "-client|pause")
    try:
        url = f"redis://nopause:pw@127.0.0.1:{fleet.redis.port}/0"
        before = await settled_state(session, fleet)
        rc, report, err = await Drill(fleet, "store-loss", "--route", "iris-drill",
                                      "--version", "v2", "--store", url, *FAST).result(60)
        assert report is not None, err
        assert rc == 2 and report["verdict"] in ("aborted", "skipped"), report
        assert "pause" in " ".join(report["reasons"]), report
        assert "pw" not in err and "pw" not in json.dumps(report)  # (the URL's password)
        async with session.get(fleet.admin + "/v1/drills", headers={
                "Authorization": f"Bearer {token()}"}) as r:
            assert (await r.json())["open"] == []  # ended, not left open
        assert await fleet_state(session, fleet) == before
    finally:
        fleet.redis.cmd("ACL", "DELUSER", "nopause")


async def test_store_loss_drill_keeps_enforcing(fleet: Fleet, session: ClientSession) -> None:
    before = await settled_state(session, fleet)
    obs = Observer(session, fleet.urls, {**DRILL_HDR, "x-killgate-pin": "v2"})
    obs.start()
    rc, report, err = await Drill(fleet, "store-loss", "--route", "iris-drill", "--version",
                                  "v2", "--store", fleet.redis.url, "--rate", "40", "--steady",
                                  "600ms", "--hold", "2s", "--settle", "1s").result(60)
    seen = await obs.stop()
    assert rc == 0 and report is not None, err
    assert report["verdict"] == "passed", report
    assert report["store_outage_ms"] >= 1900
    # the hold is the instances' lease (2s): every lease lapsed during the outage, and the
    # restore made at once after it was "applied by 1/1 instance(s)" (or 2/2) with three
    # running; the drill now waits for their heartbeats first, so its receipt counts them
    assert report["receipts"]["restore"]["instances"] == 3, (report["receipts"], err)
    assert report["receipts"]["restore"]["acked"] == 3, report["receipts"]
    assert report["restore_short"] is None and "WARNING" not in err, err
    out0 = report["t0_unix"] + report["marks_ms"]["outage_start"] / 1000
    out1 = report["t0_unix"] + report["marks_ms"]["outage_end"] / 1000
    during = [x for x in seen if out0 <= x.sent < out1]
    assert len(during) > 100
    assert all(x.status == 200 and x.version == "v1" for x in during)  # still killed
    assert await fleet_state(session, fleet) == before


async def test_after_an_outage_the_drill_waits_for_heartbeats_and_names_the_absent(
        fleet: Fleet, session: ClientSession) -> None:
    """control/drillrejoin.wait_rejoined against the fleet: its three instances heartbeat
    (every 200 ms) and are back at once; an instance the drill started with that never
    heartbeats again is named once the wait's bound has passed (the drill says so)."""
    from gateway.control.drillload import AdminClient
    from gateway.control.drillrejoin import wait_rejoined

    api = AdminClient(session, fleet.admin, token())
    ids = sorted((await api.call("GET", "/v1/status"))["instances"])
    assert len(ids) == 3
    t0 = time.monotonic()
    assert await wait_rejoined(api, ids, 1.0, 5.0, asyncio.Event()) == []
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    assert await wait_rejoined(api, [*ids, "gone"], 1.0, 0.5, asyncio.Event()) == ["gone"]
    assert 0.4 < time.monotonic() - t0 < 2


async def test_store_loss_without_the_store_is_skipped(fleet: Fleet,
                                                       session: ClientSession) -> None:
    rc, report, _ = await Drill(fleet, "store-loss", "--route", "iris-drill", "--version",
                                "v2", *FAST).result()
    assert rc == 3 and report is not None and report["verdict"] == "skipped"
    assert "--store" in report["reasons"][0]


async def test_history_trend_and_metrics_on_every_instance(fleet: Fleet,
                                                           session: ClientSession) -> None:
    """Run after the drills above: each is in the history, and every instance exports the
    last result of each kind and route (from the replicated state)."""
    res = await acli("drill", "history", "--limit", "50", "--admin", fleet.admin, "--token",
                     token())
    text = res.stdout
    assert res.returncode == 0, res.stderr
    assert "trend:" in text and "failover on iris-drill: 1/1 passed" in text, text
    # (the interrupted drills' "aborted": tests/test_drills_interrupted.py, on its own fleet)
    assert "rollback on iris-drill" in text and "OPEN" not in text
    for g in fleet.gateways:
        async with session.get(g.admin + "/metrics") as r:
            m = await r.text()
        for kind in ("failover", "rollback", "store_loss"):
            line = next(x for x in m.splitlines() if x.startswith("killgate_drill_last_passed{")
                        and f'kind="{kind}"' in x and 'route="iris-drill"' in x)
            assert float(line.rsplit(" ", 1)[1]) == 1.0, (g.admin, line)
        assert any(x.startswith("killgate_drills_open ") and float(x.split()[1]) == 0
                   for x in m.splitlines())
