"""A `--workers N` scrape's page is written in slices (telemetry/workers.py `families`):
the answering worker's series are taken at once, its snapshot file written a step later.
A periodic publish can come between (the loop runs between the steps): the file then holds
newer counts, and the page's late write must not put the older ones back (a sibling's
scrape would then show this slot's counters going backwards). Real `Metrics`, real files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry.groupfile import decode
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.workers import WorkerMetrics
from tests.series import new_stats, record_request

pytestmark = pytest.mark.timeout(30)


def _answers(page: bytes) -> float:
    fam = next(f for f in text_string_to_metric_families(page.decode())
               if f.name == "killgate_requests")
    return sum(s.value for s in fam.samples if s.name == "killgate_requests_total")


def _filed(path: Path) -> float:
    raw = decode(path.read_bytes())[1]
    return sum(sum(c[0][:-1]) for c in raw.entries.values())


async def test_a_publish_between_the_pages_steps_is_not_undone(tmp_path: Path) -> None:
    workers = []
    for slot in (0, 1):
        m, stats = Metrics(), new_stats()
        m.source(stats)
        w = WorkerMetrics(m, stats, tmp_path, slot)
        w.start()
        workers.append(w)
        m.expose(w)
    me, sibling = workers
    record_request(me.stats, "v1")
    record_request(sibling.stats, "v1")
    sibling.publish()
    parts, _ = me.metrics.page(None)  # (the series taken: 1 answer of its own)
    for _ in range(2):  # (the loop meanwhile: requests, the periodic publish)
        record_request(me.stats, "v1")
    me.publish()
    page = b"".join(parts)
    assert _answers(page) >= 2  # (its own as taken or as filed since, and the sibling's)
    assert _filed(me.path) == 3  # the newer counts stay in the file
    later, _ = me.metrics.exposition(None)  # (a sibling's view of this slot never steps back)
    assert _answers(later) == 4
    for w in workers:
        await w.stop()


async def test_a_failed_write_after_a_scrape_never_counts_a_sibling_twice(
        tmp_path: Path) -> None:
    """A scrape merged the siblings' counts into the very series it had just written
    (`written`, what the slot's file holds): when the next write failed (a full disk),
    the page showed this slot's counts "as filed" with the siblings' in them, then added
    the siblings again (here 1 + 5 + 5 answers, not 6), and stepped back to 6 once a
    write worked again: a counter reset to Prometheus. Real `Metrics`, real files."""
    workers = []
    for slot in (0, 1):
        m, stats = Metrics(), new_stats()
        m.source(stats)
        w = WorkerMetrics(m, stats, tmp_path, slot)
        w.start()
        workers.append(w)
        m.expose(w)
    me, sibling = workers
    record_request(me.stats, "v1")
    for _ in range(5):
        record_request(sibling.stats, "v1")
    sibling.publish()
    assert _answers(me.metrics.exposition(None)[0]) == 6
    assert _filed(me.path) == 1  # (what the slot's file holds: its own answer only)
    # its writes fail from now on (the temporary file's name taken by a directory)
    blocker = me.dir / f".slot-{me.slot}.{os.getpid()}.tmp"
    blocker.mkdir()
    try:
        assert _answers(me.metrics.exposition(None)[0]) == 6
        assert _answers(me.metrics.exposition(None)[0]) == 6
    finally:
        blocker.rmdir()
    assert _answers(me.metrics.exposition(None)[0]) == 6
    for w in workers:
        await w.stop()
