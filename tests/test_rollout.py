"""Health checks, failover, rollback and canary analysis against real loopback backends."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change
from tests.backends import echo_app
from tests.conftest import (
    ROOT,
    bearer,
    die_with_parent,
    free_port,
    running_gateway,
    wait_until,
    write_config,
)
from tests.loadgen import BackgroundLoad

INFER = "/v2/models/iris/infer"


def auth(scope: str = "killgate:admin") -> dict[str, str]:
    return bearer(scope, 'ops', 600)


class Flaky:
    """A backend whose answers the test can switch between 200 and 500."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = 200

    def app(self) -> web.Application:
        async def handler(req: web.Request) -> web.Response:
            await req.read()
            return web.json_response({"version": self.name}, status=self.status)

        app = web.Application()
        app.router.add_route("*", "/{t:.*}", handler)
        return app


class Webhook:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def app(self) -> web.Application:
        async def handler(req: web.Request) -> web.Response:
            self.events.append(await req.json())
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/hook", handler)
        return app


def route(p1: int, p2: int, w1: float, w2: float, extra: str = "", v0: int | None = None,
          stable: str = "v1", w0: float = 0) -> str:
    versions = ""
    if v0 is not None:
        versions += f'    - {{name: v0, url: "http://127.0.0.1:{v0}", weight: {w0}}}\n'
    versions += (f'    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: {w1}}}\n'
                 f'    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: {w2}}}\n')
    return (f"- name: iris\n  match: {{path_prefix: /v2/models/iris}}\n  stable: {stable}\n"
            f"  versions:\n{versions}" + extra)


class Load(BackgroundLoad):
    """Steady client load; records (start time, status, version, decision) per request."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__()
        self.url = url
        self.rate = rate
        self.results: list[tuple[float, int, str, str]] = []

    async def _run(self) -> None:
        async with ClientSession() as s:
            async def one() -> None:
                t0 = time.monotonic()
                try:
                    async with s.get(self.url) as r:
                        await r.read()
                        self.results.append((t0, r.status, r.headers.get("x-killgate-version", ""),
                                             r.headers.get("x-killgate-decision", "")))
                except Exception:  # noqa: BLE001 - a client-visible connection failure
                    self.results.append((t0, -1, "", ""))

            tasks = set()
            while not self._stop.is_set():
                t = asyncio.create_task(one())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                await asyncio.sleep(1 / self.rate)
            await asyncio.gather(*tasks)

    def since(self, t: float) -> list[tuple[float, int, str, str]]:
        return [r for r in self.results if r[0] >= t]


async def test_failing_canary_is_rolled_back_automatically(tmp_path: Path, backends) -> None:
    stable, canary, hook = Flaky("v1"), Flaky("v2"), Webhook()
    p1, p2 = await backends(stable.app()), await backends(canary.app())
    ph = await backends(hook.app())
    canary.status = 500
    extra = (f"  analysis: {{window: 2s, interval: 250ms, min_requests: 10, "
             f"webhook_url: 'http://127.0.0.1:{ph}/hook'}}\n")
    cfg = write_config(tmp_path, route(p1, p2, 70, 30, extra))
    async with running_gateway(cfg) as g:
        load = Load(g.url + INFER, 100)
        load.start()
        t0 = time.monotonic()
        await wait_until(lambda: "iris" in g.gw.holder.doc.overrides, 5,
                         what="the automatic rollback")
        rolled = time.monotonic()
        await asyncio.sleep(0.5)
        await load.stop()
        assert rolled - t0 < 2.5  # within one analysis window
        ov = g.gw.holder.doc.overrides["iris"]
        assert (ov.kind, ov.actor, ov.weights["v2"]) == ("auto_rollback", "killgate/auto", 0.0)
        after = load.since(rolled + 0.05)
        assert after and all(r[1:3] == (200, "v1") for r in after)  # no more canary traffic
        bad = [r for r in load.results if r[1] != 200]
        assert all(r[1:3] == (500, "v2") for r in bad)  # only the canary's own 500s
        async with ClientSession() as s, s.get(g.admin + "/v1/audit?limit=50", headers=auth()) as r:
            events = (await r.json())["events"]
        ev = next(e for e in events if e["action"] == "auto_rollback")
        assert ev["actor"] == "killgate/auto" and ev["evidence"]["canary"]["errors"] > 0
        await wait_until(lambda: hook.events, 5, what="the webhook call")
        assert hook.events[0]["event"] == "killgate.auto_rollback"
        assert hook.events[0]["route"] == "iris" and hook.events[0]["version"] == "v2"
        assert hook.events[0]["trigger"] == "automatic" and hook.events[0]["evidence"]["canary"]


def _proc_backend(port: int, version: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.proc_backend", str(port), version],
                            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=die_with_parent)


async def test_stable_killed_under_load_fails_over_to_previous_known_good(tmp_path: Path) -> None:
    ports = {v: free_port() for v in ("v0", "v1", "v2")}
    procs = {v: _proc_backend(p, v) for v, p in ports.items()}
    try:
        async with ClientSession() as s:
            for p in ports.values():
                await wait_until(lambda p=p: _ready(s, p), 10, 0.05, "backend up")
        # (timeout just under the interval: at 100 ms, a loaded clean-clone CI run (2 cores,
        # other work beside) had three probes in a row of every version time out before the
        # kill, all three marked down, and a 503 in the load; a killed backend's probe is
        # refused at once, so the timeout does not slow the detection measured here)
        health = ("  health: {path: /v2/health/ready, interval: 200ms, timeout: 190ms, "
                  "unhealthy_threshold: 3, healthy_threshold: 2}\n")
        # The file has v0 as stable (recorded in the history); we promote v1 (history: v0,
        # v1) and give the canary v2 a slice.
        cfg = write_config(tmp_path, route(ports["v1"], ports["v2"], 0, 0, health,
                                           v0=ports["v0"], stable="v0", w0=100))
        async with running_gateway(cfg) as g, ClientSession() as s:
            async with s.post(g.admin + "/v1/routes/iris/promote", headers=auth(),
                              json={"version": "v1", "reason": "ship v1"}) as r:
                assert r.status == 200, await r.text()
            async with s.put(g.admin + "/v1/routes/iris/weights", headers=auth(),
                             json={"weights": {"v1": 90, "v2": 10}, "reason": "canary"}) as r:
                assert r.status == 200, await r.text()
            load = Load(g.url + "/v2/models/iris", 50)  # GET: model metadata
            load.start()
            # 90/10: poll until both versions have answered (a fixed 1 s of load at 50 req/s
            # saw no v2 about 1 run in 200; and the canary can answer first, 1 run in 10)
            both = {(200, "v1"), (200, "v2")}
            await wait_until(lambda: both <= {r[1:3] for r in load.results}, 10, 0.01,
                             "both versions to answer")
            assert {r[1:3] for r in load.results} == both
            procs["v1"].kill()
            procs["v1"].wait()
            killed = time.monotonic()
            await wait_until(lambda: ("iris", "v1") in g.gw.holder.unhealthy, 3, 0.01,
                             "v1 marked unhealthy")
            marked = time.monotonic() - killed

            def settled_with_canary() -> bool:  # at 90/10, 40 requests miss v2 1 run in 70
                settled = load.since(killed + marked + 0.05)
                return len(settled) >= 40 and any(r[2] == "v2" for r in settled)

            await wait_until(settled_with_canary, 10, 0.01, "requests to v0 and v2 after it")
            failover = load.since(killed + 0.05)
            procs["v1"] = _proc_backend(ports["v1"], "v1")
            restarted = time.monotonic()
            await wait_until(lambda: any(r[2] == "v1" for r in load.since(restarted)), 10, 0.01,
                             "v1 used again")
            first_v1 = min(r[0] for r in load.since(restarted) if r[2] == "v1")
            await load.stop()
        errors = [r for r in failover if r[1] != 200]
        assert errors == []  # no request sent after the kill failed
        assert marked < 0.2 * 3 + 0.5  # interval x unhealthy_threshold, plus slack
        settled = [r for r in failover if r[0] > killed + marked + 0.05]
        by_version = Counter(r[2] for r in settled)
        assert set(by_version) <= {"v0", "v2"} and by_version["v0"] > by_version["v2"] > 0
        assert all(r[3] == "failover" for r in settled if r[2] == "v0")
        # back only after healthy_threshold (2) passing probes: at least one more interval
        assert first_v1 - restarted > 0.15
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


async def _ready(s: ClientSession, port: int) -> bool:
    try:
        async with s.get(f"http://127.0.0.1:{port}/v2/health/ready") as r:
            return r.status == 200
    except OSError:
        return False


async def test_every_version_down_answers_the_fallback(tmp_path: Path, session) -> None:
    health = ("  health: {path: /ready, interval: 100ms, timeout: 50ms, "
              "unhealthy_threshold: 1, healthy_threshold: 1}\n"
              "  fallback: {status: 503, json: {error: {type: unavailable}}}\n")
    cfg = write_config(tmp_path, route(free_port(), free_port(), 50, 50, health))
    async with running_gateway(cfg) as g, session.get(g.url + INFER) as r:
        assert r.status == 503
        assert r.headers["x-killgate-decision"] == "fallback"
        assert r.headers["x-killgate-route"] == "iris"
        assert "x-killgate-version" not in r.headers
        assert await r.json() == {"error": {"type": "unavailable"}}


async def test_rollback_history_artifacts_and_latch(tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("any"))
    cfg = write_config(tmp_path, route(p, p, 90, 10).replace(
        f'{{name: v2, url: "http://127.0.0.1:{p}", weight: 10}}',
        f'{{name: v2, url: "http://127.0.0.1:{p}", weight: 10, artifact: "sha256:c2"}}'))
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/routes/iris/rollback", headers=auth(),
                                json={"reason": "nothing to go back to"}) as r:
            assert r.status == 409
        async with session.post(g.admin + "/v1/routes/iris/promote", headers=auth(),
                                json={"version": "v2", "reason": "ship"}) as r:
            res = await r.json()
            assert res["applied"]["acked"] == res["applied"]["instances"] == 1
        async with session.post(g.admin + "/v1/routes/iris/rollback", headers=auth(),
                                json={"reason": "v2 is bad"}) as r:
            res = await r.json()
            assert r.status == 200 and res["applied"]["pending"] == []
        async with session.get(g.admin + "/v1/status", headers=auth("killgate:read")) as r:
            st = (await r.json())["routes"]["iris"]
        assert st["stable"] == "v1" and st["latched"] is True
        assert [h["stable"] for h in st["history"]] == ["v1", "v2", "v1"]
        assert st["versions"]["v2"]["effective_weight"] == 0
        # a reload that still names the canary's weight does not restore it
        cfg.write_text(cfg.read_text().replace("weight: 10,", "weight: 40,"))
        assert await g.gw.watcher.reload("test")
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 0.0
        async with session.post(g.admin + "/v1/routes/iris/release", headers=auth(),
                                json={"reason": "the file governs again"}) as r:
            assert r.status == 200
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == round(4000 / 130, 4)
        # another instance recorded v2 with a different artifact: rollback to it is refused
        await g.gw.sync.write(
            lambda cur: Change(identities={"iris": {
                **cur.identities["iris"], "v2": {"url": "x", "artifact": "sha256:other"}}}),
            lambda cur, new: AuditDraft("t", "test", {}, "test"))
        async with session.post(g.admin + "/v1/routes/iris/rollback", headers=auth(),
                                json={"to": "v2", "reason": "try"}) as r:
            assert r.status == 409 and (await r.json())["error"]["type"] == "artifact_changed"
        async with session.post(g.admin + "/v1/routes/iris/rollback", headers=auth(),
                                json={"to": "v9", "reason": "try"}) as r:
            assert r.status == 404


async def test_too_little_traffic_is_inconclusive(tmp_path: Path, backends) -> None:
    stable, canary = Flaky("v1"), Flaky("v2")
    p1, p2 = await backends(stable.app()), await backends(canary.app())
    canary.status = 500
    # no outlier ejection: five canary 500s in a row (1 run in 5,000 at 5 req/s) would count
    # as a failed analysis, and this test is about too few requests
    extra = ("  analysis: {window: 1s, interval: 200ms, min_requests: 50, "
             "steps: [10, 50, 100], step_interval: 300ms}\n  outlier: {enabled: false}\n")
    cfg = write_config(tmp_path, route(p1, p2, 90, 10, extra))
    async with running_gateway(cfg) as g:
        load = Load(g.url + INFER, 5)
        load.start()
        await wait_until(lambda: g.gw.rollout.verdicts.get("iris") is not None
                         and g.gw.holder.doc.progress.get("iris", {}).get("state") == "paused",
                         5, what="a paused rollout")
        await asyncio.sleep(1.0)
        await load.stop()
        assert g.gw.rollout.verdicts["iris"].status == "inconclusive"
        # the last verdicts, newest first, with their evidence (the console shows them)
        recent = g.gw.rollout.status("iris")["recent"]
        assert 1 < len(recent) <= 10 and recent[0]["verdict"] == "inconclusive"
        assert recent[0]["time"] >= recent[-1]["time"] and "canary" in recent[0]["evidence"]
        assert "iris" not in g.gw.holder.doc.overrides  # neither rolled back nor promoted
        assert g.gw.holder.doc.progress["iris"]["step"] == 0


async def test_progressive_steps_advance_then_stop_on_failure(tmp_path: Path, backends,
                                                             session) -> None:
    """... and the automatic rollback records the canary as rolled off; its release
    restarts the rollout at the first step (10 %), never the file's weight (50 %): before,
    the failed rollout stayed `failed` and the canary got 50 % at once, unjudged."""
    stable, canary = Flaky("v1"), Flaky("v2")
    p1, p2 = await backends(stable.app()), await backends(canary.app())
    extra = ("  analysis: {window: 1s, interval: 150ms, min_requests: 3, "
             "steps: [10, 30, 60, 100], step_interval: 400ms}\n")
    cfg = write_config(tmp_path, route(p1, p2, 50, 50, extra))
    async with running_gateway(cfg) as g:
        load = Load(g.url + INFER, 100)
        load.start()
        steps_seen: list[int] = []

        def progressed_to(step: int) -> bool:
            prog = g.gw.holder.doc.progress.get("iris", {})
            if prog.get("step") is not None and prog["step"] not in steps_seen:
                steps_seen.append(prog["step"])
            return prog.get("step", -1) >= step

        await wait_until(lambda: progressed_to(2), 10, what="step 3 (60%)")
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 60.0
        canary.status = 500
        await wait_until(lambda: "iris" in g.gw.holder.doc.overrides, 5,
                         what="rollback on failure")
        await load.stop()
        assert steps_seen == [0, 1, 2]
        assert g.gw.holder.doc.progress["iris"]["state"] == "failed"
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 0.0
        [off] = g.gw.holder.doc.rolled_off["iris"]
        assert (off.version, off.kind, off.actor) == ("v2", "auto_rollback", "killgate/auto")
        async with session.post(f"{g.admin}/v1/routes/iris/release", headers=auth(),
                                json={"reason": "v2 fixed"}) as r:
            assert r.status == 200, await r.text()
        # (its weight: outlier detection may still have it ejected for its 500s)
        assert g.gw.holder.table.by_name["iris"].weights["v2"] == 10.0


async def test_a_version_answering_5xx_is_ejected_and_readmitted(tmp_path: Path, backends,
                                                                 session) -> None:
    """RELIABILITY row 1 over HTTP: after `consecutive_5xx` 500s a version leaves the split
    (its traffic goes to the healthy one), and comes back after `base_ejection`."""
    stable, canary = Flaky("v1"), Flaky("v2")
    p1, p2 = await backends(stable.app()), await backends(canary.app())
    canary.status = 500
    extra = "  outlier: {consecutive_5xx: 5, base_ejection: 1s}\n"
    cfg = write_config(tmp_path, route(p1, p2, 50, 50, extra))
    async with running_gateway(cfg) as g:
        seen: list[tuple[int, str]] = []

        async def one() -> tuple[int, str]:
            async with session.get(g.url + INFER) as r:
                await r.read()
                return r.status, r.headers.get("x-killgate-version", "")

        while ("iris", "v2") not in g.gw.holder.unhealthy:
            seen.append(await one())
            assert len(seen) < 500, Counter(seen)  # 50/50: five v2 answers come quickly
        ejected = time.monotonic()
        assert Counter(seen)[(500, "v2")] == 5 and set(seen) <= {(200, "v1"), (500, "v2")}
        assert g.gw.metrics.get("killgate_upstream_ejections_total",
                                ("iris", "v2", "5xx")) == 1
        during = []
        for _ in range(40):
            sent = time.monotonic()
            answer = await one()
            if sent < ejected + 0.9:  # inside the 1 s ejection: every request to v1
                during.append(answer)
        canary.status = 200  # fixed meanwhile
        assert during and set(during) == {(200, "v1")}, Counter(during)
        back = await wait_until(lambda: ("iris", "v2") not in g.gw.holder.unhealthy, 5, 0.01,
                                "v2 re-admitted")
        assert back and time.monotonic() - ejected >= 0.9
        after = [await one() for _ in range(60)]
        assert {v for _, v in after} == {"v1", "v2"} and {s for s, _ in after} == {200}


async def test_a_hanging_version_times_out_and_its_checks_take_it_out(tmp_path: Path,
                                                                      backends) -> None:
    """RELIABILITY row 3: a backend that accepts and never answers: requests to it end in
    504 at the route's total timeout, and its health checks (timing out too) take it out
    of the split, so the rest go to the healthy version."""
    from tests.backends import hang_app

    stable = Flaky("v1")
    p1, p2 = await backends(stable.app()), await backends(hang_app())
    extra = ("  timeouts: {connect: 200ms, total: 500ms}\n"
             "  health: {path: /health, interval: 200ms, timeout: 100ms, "
             "unhealthy_threshold: 2, healthy_threshold: 2}\n")
    cfg = write_config(tmp_path, route(p1, p2, 50, 50, extra))
    async with running_gateway(cfg) as g:
        started = time.monotonic()
        load = Load(g.url + INFER, 20)
        load.start()
        await wait_until(lambda: ("iris", "v2") in g.gw.holder.unhealthy, 5, 0.01,
                         "v2 marked unhealthy")
        marked = time.monotonic() - started
        settled = marked + 0.6  # requests already sent to v2 end by their timeout
        await wait_until(lambda: len(load.since(started + settled)) >= 20, 10, 0.01,
                         "requests after it")
        await load.stop()
        timed_out = [r for r in load.results if r[1] == 504]
        assert all(r[2] == "v2" for r in timed_out)
        after = load.since(started + settled)
        assert {(r[1], r[2]) for r in after} == {(200, "v1")}, Counter(r[1:3] for r in after)
        assert marked < 0.2 * 2 + 0.1 + 1.0  # interval x threshold + timeout, plus slack


async def test_an_unexpected_error_in_one_round_does_not_end_analysis(
        tmp_path: Path, backends, caplog: pytest.LogCaptureFixture) -> None:
    """A bug in one evaluation (an error that is neither the store's nor the audit's) is
    logged with its traceback, and the loop goes on: analysis (and with it automatic
    rollback) does not stop silently until the next restart."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    extra = "  analysis: {window: 1s, interval: 100ms, min_requests: 50}\n"
    cfg = write_config(tmp_path, route(p1, p2, 90, 10, extra))
    async with running_gateway(cfg) as g:
        rollout = g.gw.rollout
        real = rollout.evaluate
        calls = {"n": 0}

        async def evaluate(rc):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("a bug in one round")
            return await real(rc)

        rollout.evaluate = evaluate  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="killgate"):
            await wait_until(lambda: calls["n"] >= 3, 10, what="rounds after the failed one")
        failed = [r for r in caplog.records if r.getMessage() == "analysis_failed"]
        assert len(failed) == 1 and failed[0].exc_info is not None
        assert rollout._task is not None and not rollout._task.done()
