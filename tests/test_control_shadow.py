"""Shadow results across the fleet (control/shadow.py): every instance's counts over a real
state store, stale and foreign blobs left out; the gate holds progressive delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from gateway.configfile import parse_config_text
from gateway.control.shadow import FRESH, ShadowResults
from gateway.control.shadowblobs import stats_key
from gateway.domain.comparison import Difference
from gateway.domain.verdict import spec_for
from gateway.state.local import LocalStore
from tests.conftest import admin_token, bearer, free_port, running_gateway, wait_until, write_config
from tests.shadow_backends import v2_app, v2_request
from tests.shadowrig import CFG, Local, local_rig, tally
from tests.staterig import store_on

Start = Callable[[web.Application], Awaitable[int]]
READ = bearer('killgate:read', 't', 10800)

async def test_the_fleet_report_sums_live_instances_and_leaves_out_the_rest(
        tmp_path: Path) -> None:
    cfg, rc, spec, store = await local_rig(tmp_path)
    now = [1000.0]
    a, b = Local(), Local()
    ra = ShadowResults(a, store, "a", lambda: cfg, clock=lambda: now[0])
    rb = ShadowResults(b, store, "b", lambda: cfg, clock=lambda: now[0])
    a.tallies["iris"] = tally(spec, 3, 1)
    b.tallies["iris"] = tally(spec, 2, 2)
    await rb.publish(rc)
    # a stale instance, another shadow version, other settings, and garbage: left out
    old = tally(spec, 50, 0).to_json()
    await store.put_stats(stats_key("iris"), "gone", {"t": now[0] - FRESH - 1, "tally": old})
    await store.put_stats(stats_key("iris"), "v9", {"t": now[0],
                                                    "tally": tally(spec, 9, 0, "v9").to_json()})
    await store.put_stats(stats_key("iris"), "other", {"t": now[0],
                                                       "tally": tally("x", 9, 0).to_json()})
    for junk in ({"t": now[0]}, {"t": "soon", "tally": old}, {"t": now[0], "tally": {"x": 1}},
                 {"t": now[0], "tally": {**old, "primary_ms": [1, 2]}},
                 {"t": now[0], "tally": {**old, "disagreements": "no"}}):
        await store.put_stats(stats_key("iris"), f"junk{len(str(junk))}", junk)
    rep = await ra.report(rc)  # publishes a's own counts first
    assert (rep["compared"], rep["agreed"], rep["agreement"], rep["instances"]) == (8, 5, 0.625, 2)
    assert rep["copies"]["sent"] == 8 and rep["differences"] == {"values": 3}
    assert len(rep["disagreements"]) == 3
    assert rep["gate"]["open"] is False
    # the gate reads the fleet's merge (refreshed by each instance's loop)
    assert "5 of 8" in (ra.gate(rc) or "")
    b.tallies["iris"] = tally(spec, 12, 2)
    await rb.publish(rc)
    await ra.refresh(rc)
    assert ra.gate(rc) is None  # 15 of 19 agreed: 78.9% >= 75%
    # a's numbers are republished only when they changed, or as a heartbeat
    before = await store.get_stats(stats_key("iris"))
    await ra.publish(rc)
    assert await store.get_stats(stats_key("iris")) == before


async def test_progressive_delivery_waits_for_the_shadow_gate(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "noise"))
    routes = f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  protocol: v2
  shadow: {{version: v2, sample: 1.0}}
  analysis: {{interval: 100ms, window: 5s, min_requests: 1000, steps: [10, 50],
              min_shadow_agreement: 0.9, min_shadow_compared: 10}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
"""
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as gw:
        rollout = gw.gw.rollout
        assert rollout is not None

        def held() -> bool:
            recent = rollout.recent.get("iris") or []
            return sum("held" in r for r in recent) >= 3

        await wait_until(held, 10, what="three analysis rounds held by the gate")
        assert "iris" not in gw.gw.holder.doc.progress
        assert gw.gw.holder.table.by_name["iris"].shadow is not None
        for x in range(12):
            async with session.post(gw.url + "/v2/models/iris/infer", data=v2_request(x)) as r:
                assert r.status == 200

        def started() -> Any:
            return gw.gw.holder.doc.progress.get("iris")

        prog = await wait_until(started, 15, what="the progressive rollout to start")
        assert prog["canary"] == "v2" and prog["step"] == 0
        plan = gw.gw.holder.table.by_name["iris"]
        assert plan.shadow is None and plan.effective_weights()["v2"] == 10.0


async def test_two_workers_report_the_fleet(tmp_path: Path, backends: Start,
                                            gateway_procs: Any) -> None:
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "change" if x % 4 == 0 else None))
    routes = f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  protocol: v2
  shadow: {{version: v2, sample: 1.0}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
"""
    cfg = write_config(tmp_path, routes, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(gw.wait_ready)
    await wait_until(lambda: gw.output().count('phase="listening"') == 2, 30, 0.1,
                     what="both workers listening")
    n = 40
    for x in range(n):  # a fresh connection each: the kernel spreads them over the workers
        async with ClientSession() as s, s.post(gw.url + "/v2/models/iris/infer",
                                                data=v2_request(x)) as r:
            assert r.status == 200
    last: dict[str, Any] = {}

    async def whole() -> bool:
        nonlocal last
        async with ClientSession() as s, s.get(gw.admin + "/v1/routes/iris/shadow",
                                               headers=READ) as r:
            last = await r.json()
            if r.status != 200:  # (a store read that failed on a loaded machine: again)
                return False
        return bool(last["compared"] == n)

    await wait_until(whole, 30, 0.2, what=f"the fleet's counts (last: {last})")
    assert last["instances"] == 2 and last["agreement"] == 0.75, last
    # /metrics of the group sums both workers' shadow counters (each worker's part is at
    # most a second old)
    async def summed() -> bool:
        async with ClientSession() as s, s.get(gw.admin + "/metrics") as r:
            text = await r.text()
        sent = [line for line in text.splitlines()
                if line.startswith('killgate_shadow_copies_total{result="sent"')]
        return bool(sent) and float(sent[0].rsplit(" ", 1)[1]) == n

    await wait_until(summed, 10, 0.2, what="both workers' copies in /metrics")


async def test_counts_forged_in_redis_cannot_open_the_gate(
        tmp_path: Path, backends: Start, session: ClientSession, redis_server: Any) -> None:
    """Someone who can write to Redis but has no state key writes a blob saying the shadow
    agreed 10,000 times: it does not verify, so the report and the gate ignore it."""
    import json as _json

    from tests.test_killswitch import redis_state

    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "change"))
    routes = f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  protocol: v2
  shadow: {{version: v2, sample: 1.0}}
  analysis: {{min_shadow_agreement: 0.9, min_shadow_compared: 10}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
"""
    cfg = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path))
    tok = admin_token("killgate:rollout", "m", 600)
    rollout = {"Authorization": f"Bearer {tok}"}
    async with running_gateway(cfg) as gw:
        for x in range(4):
            async with session.post(gw.url + "/v2/models/iris/infer", data=v2_request(x)) as r:
                assert r.status == 200
        rc = gw.gw.loaded.config.routes[0]
        assert rc.shadow is not None
        forged = tally(spec_for(rc), 10_000, 0).to_json()
        redis_server.cmd("HSET", "kgtest:stats:" + stats_key("iris"), "mallory",
                         _json.dumps({"instance": "mallory", "t": 9e12, "tally": forged}))

        async def rep() -> dict[str, Any]:
            async with session.get(gw.admin + "/v1/routes/iris/shadow", headers=READ) as r:
                assert r.status == 200
                return dict(await r.json())

        out = await wait_until(lambda: _when(rep, lambda d: d["compared"] == 4), 10)
        assert out["agreed"] == 0 and out["instances"] == 1
        # (a refused entry is removed once read: revstate4, test_oversized_keys)
        await wait_until(lambda: redis_server.cmd(
            "HEXISTS", "kgtest:stats:" + stats_key("iris"), "mallory") == "0", 10,
            what="the forged entry removed")
        async with session.post(gw.admin + "/v1/routes/iris/promote", headers=rollout,
                                json={"version": "v2", "reason": "trust me"}) as r:
            assert r.status == 409 and (await r.json())["error"]["type"] == "shadow_agreement"


async def _when(fetch: Any, ok: Any) -> Any:
    d = await fetch()
    return d if ok(d) else None


async def test_the_gate_never_reads_counts_of_settings_a_reload_replaced(
        tmp_path: Path) -> None:
    """The rollout asks `gate(rc)` of the route in force, and `gate` read the fleet merged
    at the last refresh, of whatever settings were in force then: after a reload that names
    another shadow version (or changes its comparison), the old version's passing counts
    opened the new one's gate until the next refresh, and for as long as the store could
    not be read (the loop's refresh fails; the merge stays): the rollout started steps of
    traffic for a version nothing was compared for."""
    old = parse_config_text(CFG)
    new = parse_config_text(CFG.replace("version: v2,", "version: v3,")
                            .replace("name: v2,", "name: v3,"))
    tighter = parse_config_text(CFG.replace("sample: 1.0}", "sample: 1.0, compare: "
                                                            "{v2_tensors: {atol: 0.5}}}"))
    # the shadow review's item: v2 redeployed elsewhere, or another artifact
    moved = parse_config_text(CFG.replace("9102", "9202"))
    rebuilt = parse_config_text(CFG.replace('9102", weight: 0}',
                                            '9102", weight: 0, artifact: "sha256:' + "ab" * 32
                                            + '"}'))
    rc = old.routes[0]
    assert rc.shadow is not None and new.routes[0].shadow is not None
    assert new.routes[0].shadow.version == "v3"
    store = LocalStore(tmp_path / "store.json")
    await store.open()
    a = Local()
    a.tallies["iris"] = tally(spec_for(rc), 10, 0)
    results = ShadowResults(a, store, "a", lambda: old)
    await results.publish(rc)
    await results.refresh(rc)
    assert results.gate(rc) is None  # v2 agreed on 10 of 10
    for cfg in (new, tighter, moved, rebuilt):
        why = results.gate(cfg.routes[0])  # (before the loop's next refresh, or a store
        assert why is not None and "no comparison" in why, why  # that cannot be read)


async def test_kept_disagreements_too_large_for_the_store_leave_the_counts_readable(
        tmp_path: Path, redis_server: Any) -> None:
    """An instance's blob holds its counts and its kept disagreements, each the request and
    both answers up to max_body (keep 1000, max_body 1 MiB allowed). Past the store's
    MAX_DOC_BYTES (16 MiB) every reader refused the blob as unverified and removed it: the
    instance's counts left the report and the gate with it, each second, and an 'unverified
    stats' alarm said the store was forged. The newest disagreements that fit are
    published, the counts always."""
    from gateway.domain.disagreements import record_text
    from gateway.state.store import MAX_DOC_BYTES

    cfg = parse_config_text(CFG)
    rc = cfg.routes[0]
    unverified: list[str] = []
    store = store_on(redis_server, "kgbig", 5.0,
                     on_unverified=lambda kind, why, which, cause="other": unverified.append(why))
    await store.open()
    try:
        local = Local()
        t = local.tallies["iris"] = tally(spec_for(rc), 30, 0)
        t.keep = 40
        body = "x" * (1 << 20)  # (1 MiB: a long prompt kept whole)
        n = MAX_DOC_BYTES // len(body) + 4
        for i in range(n):
            t.outcome("disagreed", (Difference("values", "outputs[probs]"),), 0.01, 0.02, {})
            t.disagreement(record_text({"time": f"2030-01-01T00:00:{i:02d}Z", "request": i,
                                        "primary": {"status": 200, "body": body},
                                        "shadow": {"status": 200, "body": "y"}}))
        results = ShadowResults(local, store, "a", lambda: cfg)
        rep = await results.report(rc, limit=100)
        assert unverified == []
        assert rep["instances"] == 1 and rep["compared"] == 30 + n and rep["agreed"] == 30
        kept = [d["request"] for d in rep["disagreements"]]
        assert kept and kept == list(range(n - 1, n - 1 - len(kept), -1))  # the newest
        assert len(kept) < n
        assert len(t.disagreements) == n  # (what this instance keeps is not cut)
    finally:
        await store.close()
