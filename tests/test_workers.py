"""One /metrics for `killgate serve --workers N` (telemetry/workers.py): the files.

Slots and snapshot files without processes (real `Metrics` objects, real files), then a
real `killgate serve --workers 2`: every scrape, whichever worker answers it, counts every
request of the group, and counters never go backwards, also when a worker is killed and
replaced.
"""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.domain.shadowstats import Tally
from gateway.telemetry.groupfile import decode
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.shadowmetrics import ShadowSeries
from gateway.telemetry.workers import WorkerMetrics
from tests.backends import echo_app
from tests.conftest import free_port, two_versions, wait_until, wait_until_sync, write_config
from tests.series import new_stats, record_request, sample, samples_of

# ------------------------------------------------------------------ helpers


def _all(fams: list) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples}


async def test_a_worker_alone_shows_exactly_what_its_process_shows(tmp_path: Path) -> None:
    """Every family of the process (its values, the request series, any other source such
    as the shadow series) reaches the group's /metrics unchanged: a source the snapshot
    forgot would vanish from /metrics under --workers N."""
    m, stats = Metrics(), new_stats()
    m.source(stats)
    tally = Tally("v2", "spec")
    for outcome in ("agreed", "agreed", "noise", "disagreed"):
        tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + 1
    tally.copy("sent", 4)
    tally.primary_ms[3] += 4
    tally.primary_s += 0.1
    m.source(ShadowSeries(lambda: {"iris": tally}, lambda: {"iris": 2}))
    m.inc("killgate_failovers_total", by=2)
    m.set("killgate_state_generation", 5)
    m.collector(lambda mm: mm.set("killgate_inflight_requests", 3))
    for v in ("v1", "v1", "v2"):
        record_request(stats, v)
    w = WorkerMetrics(m, stats, tmp_path, 0)
    w.start()
    single = _all(list(m.collect()))
    group = _all(list(w.collect()))
    assert group.pop(("killgate_metrics_workers", ())) == 1
    assert group == single
    assert sample(group, "killgate_shadow_agreement_ratio", route="iris", version="v2") == 0.75
    await w.stop()


# ------------------------------------------------------------------ files and slots


async def test_a_replaced_worker_continues_its_slot_and_dead_gauges_drop(tmp_path: Path) -> None:
    first, sibling = Metrics(), Metrics()
    first_stats = new_stats()
    w0 = WorkerMetrics(first, first_stats, tmp_path, 0)
    w1 = WorkerMetrics(sibling, new_stats(), tmp_path, 1)
    w0.start()
    w1.start()
    for _ in range(5):
        record_request(first_stats, "v1")
    first.set("killgate_inflight_requests", 2)
    record_request(w1.stats, "v2")
    (tmp_path / "slot-7.json").write_bytes(b"not json")  # counted, skipped

    def total(w: WorkerMetrics) -> float:
        return sum(v for (n, _), v in samples_of(*w.group()[:1], w.stats).items()
                   if n == "killgate_requests_total")

    assert total(w1) == 1  # slot 0 has not published yet
    w0.publish()  # (its periodic publish)
    seen = [total(w1)]
    await w0.stop()  # its worker is gone: the file keeps the slot's last counts
    assert sample(samples_of(w1.group()[0], w1.stats), "killgate_inflight_requests") == 2
    w1.stale_after = -1.0  # from now on slot 0's snapshot counts as old (its writer died)
    raw, workers = w1.group()
    assert workers == 1 and sample(samples_of(raw, w1.stats), "killgate_inflight_requests") is None
    seen.append(total(w1))

    replacement = new_stats()  # a new process in slot 0: its own counts start at zero
    w0 = WorkerMetrics(Metrics(), replacement, tmp_path, 0)
    w0.start()
    w1.stale_after = 3.0
    seen += [total(w1), total(w0)]
    record_request(replacement, "v1")
    seen += [total(w0), total(w1)]
    assert seen == [6, 6, 6, 6, 7, 7], seen  # no double count, never backwards
    assert sibling.get("killgate_worker_metrics_errors_total", ("read",)) >= 1
    await w0.stop()
    await w1.stop()


# ------------------------------------------------------------------ a real process group


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return r.read()


def _totals(admin: str) -> tuple[float, float, float]:
    """(killgate_requests_total, request duration _count, metrics workers) of one scrape,
    on a fresh connection (SO_REUSEPORT picks the worker)."""
    text = _get(admin + "/metrics").decode()
    total = count = workers = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "killgate_requests_total":
                total += s.value
            elif s.name == "killgate_request_duration_seconds_count":
                count += s.value
            elif s.name == "killgate_metrics_workers":
                workers = s.value
    return total, count, workers


def _openmetrics_total(admin: str) -> float:
    """killgate_requests_total from an OpenMetrics scrape (as Prometheus asks), parsed by
    the library's strict OpenMetrics parser."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om

    req = urllib.request.Request(admin + "/metrics",
                                 headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    return sum(s.value for f in om(text) for s in f.samples
               if s.name == "killgate_requests_total")


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The supervisor makes its run directory under TMPDIR: here, where the test sees it."""
    d = tmp_path / "run"
    d.mkdir()
    yield {"TMPDIR": str(d)}


@pytest.fixture(scope="module")
def _shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One `serve --workers 2` group (tests/sharedgroup.py) for the tests below that count
    what it served: each starts from the count the ones before it left (`sent`)."""
    from tests.sharedgroup import module_group  # (it imports this module's neighbours)

    yield from module_group(tmp_path_factory.mktemp("group"), watch=True)


@pytest.fixture
def group(_shared: Any) -> Any:
    """The shared group, serving, both workers' snapshots written, every scrape showing the
    requests sent through it so far (a new group when a test left another count)."""
    g = _shared.take()

    def settled() -> bool:
        return (len(list(g.tmp.glob("*/slot-*.json"))) == 2
                and _totals(g.gw.admin)[:2] == (_shared.sent, _shared.sent))

    try:
        wait_until_sync(settled, 5.0, 0.05, "the shared group's counts settled")
    except AssertionError:
        g = _shared.renew()
        wait_until_sync(settled, 10.0, 0.05, "a new group's snapshots")
    return _shared


async def test_every_scrape_of_two_workers_counts_every_request(group: Any) -> None:
    gw, run, base = group.g.gw, group.g.tmp, group.sent
    (name,) = await asyncio.to_thread(os.listdir, run)
    run_dir = run / name
    assert run_dir.stat().st_mode & 0o777 == 0o700

    n = 60
    history: list[float] = []
    group.sent += n + 20

    def traffic() -> None:
        for _ in range(n):
            _get(gw.url + "/v2/models/iris/infer")  # a fresh connection each: both workers
            history.append(_totals(gw.admin)[0])

    await asyncio.to_thread(traffic)
    assert history == sorted(history), history  # never backwards while traffic flows
    # both workers served some (each slot's own file says so)
    per_slot = [_slot_requests(p) for p in sorted(run_dir.glob("slot-*.json"))]
    assert all(c > 0 for c in per_slot) and sum(per_slot) <= base + n, per_slot
    n += base

    def settled() -> bool:  # a sibling's snapshot is at most INTERVAL (1 s) old
        return _totals(gw.admin)[:2] == (n, n)

    await asyncio.to_thread(wait_until_sync, settled, 5.0, 0.05, f"{n} requests on a scrape")
    scrapes = [await asyncio.to_thread(_totals, gw.admin) for _ in range(20)]
    assert all(s == (n, n, 2) for s in scrapes), scrapes  # whichever worker answered
    assert await asyncio.to_thread(_openmetrics_total, gw.admin) == n

    # a worker dies (SIGKILL) and the supervisor replaces it: nothing goes backwards
    victim = _children(gw.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    await asyncio.to_thread(wait_until_sync, lambda: victim not in _children(gw.proc.pid)
                            and len(_children(gw.proc.pid)) == 2, 10.0, 0.05, "a replacement")
    await asyncio.to_thread(gw.wait_ready)

    def after_restart() -> list[tuple[float, float, float]]:
        out = []
        for _ in range(20):
            out.append(_totals(gw.admin))
            _get(gw.url + "/v2/models/iris/infer")
        return out

    seen = await asyncio.to_thread(after_restart)
    counts = [s[0] for s in seen]
    assert counts == sorted(counts) and counts[0] >= n, counts  # monotonic, none lost
    await asyncio.to_thread(wait_until_sync, lambda: _totals(gw.admin)[:2] == (n + 20, n + 20),
                            5.0, 0.05, "the requests since, on a scrape")
    # (the group's exit code, 0, and its run directory removed: at the stop of the last
    # test that shares it, or at the module's end)


def _slot_requests(path: Path) -> float:
    _, raw = decode(path.read_bytes())
    return sum(int(sum(dur[:-1])) for dur, _, _ in raw.entries.values())


async def test_one_worker_writes_no_files(tmp_path: Path, backends, gateway_procs,
                                          tmpdir_env) -> None:
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=1, env=tmpdir_env)
    await asyncio.to_thread(gw.wait_ready)
    await asyncio.to_thread(_get, gw.url + "/v2/models/iris/infer")
    total, count, workers = await asyncio.to_thread(_totals, gw.admin)
    assert (total, count, workers) == (1, 1, 0)  # its own series; no group gauge
    assert not await asyncio.to_thread(os.listdir, tmpdir_env["TMPDIR"])
    assert gw.stop() == 0, gw.output()


async def test_a_replacement_started_on_edited_buckets_keeps_counters_monotonic(
        group: Any) -> None:
    """An operator edits telemetry.buckets and reloads (the running workers keep theirs
    until a restart; the group's config bytes take the edit), then a worker dies: its
    replacement keeps the group's buckets, so every scrape still sums every worker and
    killgate_requests_total never goes backwards, whichever worker answers."""
    gw, run, n = group.g.gw, group.g.tmp, group.sent + 30
    (run_dir,) = await asyncio.to_thread(lambda: list(run.iterdir()))
    group.sent += 30 + 20

    def traffic(count: int) -> list[float]:
        seen = []
        for _ in range(count):
            _get(gw.url + "/v2/models/iris/infer")  # a fresh connection each: both workers
            seen.append(_totals(gw.admin)[0])
        return seen

    await asyncio.to_thread(traffic, 30)
    await asyncio.to_thread(wait_until_sync, lambda: _totals(gw.admin)[:2] == (n, n),
                            5.0, 0.05, f"{n} requests on a scrape")
    gw.config.write_text(gw.config.read_text().replace(
        "routes:\n", "telemetry:\n  buckets: {request_duration: [0.1, 1]}\nroutes:\n", 1))
    gw.signal(signal.SIGHUP)
    await asyncio.to_thread(wait_until_sync, lambda: "request_duration" in (
        run_dir / "config").read_text(), 10.0, 0.05, "the edit in the group's config bytes")
    victim = _children(gw.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    await asyncio.to_thread(wait_until_sync, lambda: victim not in _children(gw.proc.pid)
                            and len(_children(gw.proc.pid)) == 2, 10.0, 0.05, "a replacement")
    await asyncio.to_thread(wait_until_sync, lambda: group.out().count('phase="listening"') == 1,
                            20.0, 0.05, "the replacement listening")
    seen = await asyncio.to_thread(traffic, 20)
    assert seen == sorted(seen) and seen[0] >= n, seen  # monotonic, none lost
    await asyncio.to_thread(wait_until_sync, lambda: _totals(gw.admin)[:2] == (n + 20, n + 20),
                            5.0, 0.05, "the requests since, on a scrape")
    scrapes = [await asyncio.to_thread(_totals, gw.admin) for _ in range(20)]
    assert all(s == (n + 20, n + 20, 2) for s in scrapes), scrapes  # whichever worker answered


async def test_the_first_worker_of_a_fresh_group_publishes_every_interval(
        tmp_path: Path) -> None:
    """Since 3d7aa5b the publishing task was started only where a slot's or a sibling's
    snapshot was read (its line had slipped into _keep_buckets): the first worker of a
    fresh group wrote its slot at start and at stop only, and its siblings answered
    scrapes with its counts from the start."""
    m = Metrics()
    w = WorkerMetrics(m, new_stats(), tmp_path, 0, interval=0.05)
    w.start()
    try:
        m.inc("killgate_failovers_total", by=3)
        await wait_until(lambda: decode(w.path.read_bytes())[1].values.get(
            "killgate_failovers_total", ((), {}))[1].get(()) == 3.0, 5,
            what="the slot republished")
    finally:
        await w.stop()


async def test_the_groups_inflight_gauge_counts_every_workers_requests(
        tmp_path: Path, backends, gateway_procs, tmpdir_env) -> None:
    """killgate_inflight_requests was set only when a worker answered a scrape: a sibling's
    snapshot carried its count as of the last scrape it answered (none: absent), so the
    group's sum left out the requests in flight on every other worker."""
    import time

    from aiohttp import ClientSession, TCPConnector, web

    arrived: list[int] = []

    async def hold(req: web.Request) -> web.StreamResponse:
        arrived.append(1)
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hold)
    port = await backends(app)
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=2, env=tmpdir_env)
    await asyncio.to_thread(gw.wait_ready)
    run = Path(tmpdir_env["TMPDIR"])
    n = 16  # each on its own connection: SO_REUSEPORT spreads them over both workers
    session = ClientSession(connector=TCPConnector(force_close=True, limit=0))
    held = [asyncio.ensure_future(session.get(gw.url + "/v2/models/iris/infer"))
            for _ in range(n)]
    try:
        await wait_until(lambda: len(arrived) == n, 10, what=f"{n} requests at the backend")
        since = time.monotonic()

        def published_since() -> bool:  # every worker has written its slot after that
            slots = list(run.glob("*/slot-*.json"))
            return len(slots) == 2 and all(decode(p.read_bytes())[0] > since for p in slots)

        await asyncio.to_thread(wait_until_sync, published_since, 10.0, 0.05,
                                "both workers' snapshots since")
        text = (await asyncio.to_thread(_get, gw.admin + "/metrics")).decode()
        inflight = [s.value for f in text_string_to_metric_families(text)
                    for s in f.samples if s.name == "killgate_inflight_requests"]
        assert inflight == [n], inflight
    finally:
        # the held requests' clients go first: the group then drains at once (it waited on
        # them for the whole stop timeout, 15 s, and was SIGKILLed)
        for h in held:
            h.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        await session.close()
        gw.stop()


async def test_a_worker_that_cannot_write_its_snapshot_never_makes_a_counter_step_back(
        group: Any) -> None:
    """A worker whose snapshot write fails ($TMPDIR full) answered scrapes with its fresh
    counts while its siblings answered with its file's older ones: killgate_requests_total
    went up and down with whichever worker answered, each step down a counter reset to
    Prometheus (rate() and increase() then add the whole count)."""
    gw, run, n = group.g.gw, group.g.tmp, 40
    blocker = await asyncio.to_thread(_block_writes_of_slot_0, run)
    group.sent += n

    def traffic() -> list[float]:
        seen = []
        for _ in range(n):
            _get(gw.url + "/v2/models/iris/infer")  # a fresh connection each: both workers
            seen.append(_totals(gw.admin)[0])
        return seen

    try:
        seen = await asyncio.to_thread(traffic)
        assert seen == sorted(seen), seen
    finally:
        (blocker / "x").unlink()
        blocker.rmdir()
    # once it can write again, every request shows
    await asyncio.to_thread(wait_until_sync, lambda: _totals(gw.admin)[0] == group.sent, 5.0,
                            0.05, f"{group.sent} requests on a scrape")
    # (the group the tests above shared: its exit code, its run directory removed)
    assert gw.stop() == 0, gw.output()
    assert not await asyncio.to_thread(os.listdir, run)  # the supervisor removed its run dir


def _block_writes_of_slot_0(run: Path) -> Path:
    """Worker 0's next snapshot writes fail (as on a full disk); its file stays readable."""
    import json

    slot0 = next(run.glob("*/slot-0.json"))
    blocker = slot0.with_name(f".slot-0.{json.loads(slot0.read_bytes())['pid']}.tmp")
    blocker.mkdir()
    (blocker / "x").touch()
    return blocker
