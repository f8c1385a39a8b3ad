"""The series of a `--workers N` group (telemetry/groupseries.py): merge and file format.

Pure: real `Metrics` and `RequestStats` objects, no files, no processes.
"""

from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from gateway.config_telemetry import BucketsConfig
from gateway.domain.shadowstats import Tally
from gateway.telemetry.grouprender import render
from gateway.telemetry.groupseries import GAUGES, add_counted, add_gauges, capture
from gateway.telemetry.metrics import HELP, INITIAL, Metrics
from gateway.telemetry.requests import RequestStats
from gateway.telemetry.shadowmetrics import ShadowSeries
from tests.series import EXPECTED, new_stats, record_request, sample, samples_of


def test_every_documented_gauge_has_a_merge_rule() -> None:
    gauges = {n for n, (kind, _) in HELP.items() if kind == "gauge"}
    missing = sorted(gauges - set(GAUGES))
    assert not missing, f"say how the workers' values combine: telemetry/groupseries.py GAUGES {missing}"
    assert set(GAUGES) <= set(HELP)
    assert set(GAUGES.values()) <= {"sum", "min", "max", "own", "split", "ratio"}


def test_counters_add_up_and_gauges_follow_their_rule() -> None:
    a, b = Metrics(), Metrics()
    a.inc("killgate_failovers_total", by=3)
    b.inc("killgate_failovers_total", by=4)
    b.inc("killgate_retries_total", by=2)  # only in the sibling: still shown
    for m, infl, gen, age, conn in ((a, 2, 9, 0.1, 1), (b, 5, 7, 4.0, 0)):
        m.set("killgate_inflight_requests", infl)
        m.set("killgate_state_generation", gen)
        m.set("killgate_kill_state_age_seconds", age)
        m.set("killgate_state_store_connected", conn)
    a.set("killgate_drills_open", 1)
    b.set("killgate_drills_open", 3)
    b.set("killgate_fail_closed", 1)
    own, sib = capture(a, new_stats()), capture(b, new_stats())
    assert add_counted(own, sib) == 0
    add_gauges(own, [sib])
    out = samples_of(own)
    assert sample(out, "killgate_failovers_total") == 7
    assert sample(out, "killgate_retries_total") == 2
    assert sample(out, "killgate_inflight_requests") == 7  # per-worker amounts: summed
    assert sample(out, "killgate_state_generation") == 7  # what every worker has applied
    assert sample(out, "killgate_kill_state_age_seconds") == 4.0  # the stalest worker
    assert sample(out, "killgate_state_store_connected") == 0  # any worker cut off
    assert sample(out, "killgate_drills_open") == 1  # the answering worker's document
    assert sample(out, "killgate_fail_closed") == 1  # only the sibling has it: taken
    assert sample(out, "killgate_metrics_workers") == 2


def _text(stats: RequestStats) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(stats)  # type: ignore[arg-type]
    return generate_latest(reg)


def test_the_group_renders_what_one_process_with_every_request_would() -> None:
    """Histogram buckets, sums, counts, requests_total and the split: summed counts
    rendered by requests.py itself, so the families are the same as one process's."""
    a, b, alone = new_stats(), new_stats(), new_stats()
    for i in range(90):
        for s in (a, alone):
            record_request(s, "v1", took=0.001 * (i % 40))
    for i in range(10):
        for s in (b, alone):
            record_request(s, "v2", 500 if i % 3 == 0 else 200, took=0.3)
    own = capture(Metrics(), a)
    add_counted(own, capture(Metrics(), b))
    add_gauges(own, [capture(Metrics(), b)])
    assert render(own, a, 2)[1] == 0  # no entry skipped
    group = samples_of(own, a)
    single = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(_text(alone).decode()) for s in f.samples}
    assert {k: v for k, v in group.items() if k[0] != "killgate_metrics_workers"
            and k[0] not in INITIAL} == single  # (the zeros every process starts with)
    assert sample(group, "killgate_split_share", route="iris", version="v1") == pytest.approx(0.9)
    assert sample(group, "killgate_split_drift", route="iris", version="v2") == pytest.approx(0.0)


def test_different_buckets_are_skipped_not_mixed() -> None:
    a = new_stats()
    other = RequestStats(BucketsConfig(request_duration=[0.1, 1.0]), lambda: EXPECTED)
    record_request(a, "v1")
    record_request(other, "v1")
    own = capture(Metrics(), a)
    assert add_counted(own, capture(Metrics(), other)) == 1  # counted as an error upstream
    assert sample(samples_of(own, a), "killgate_requests_total", route="iris", version="v1",
                decision="weighted", arm="stable", code="200") == 1


def _shadow(agreed: int, disagreed: int, inflight: int) -> Metrics:
    m = Metrics()
    t = Tally("v2", "spec")
    t.outcomes = {"agreed": agreed, "disagreed": disagreed}
    t.copy("sent", agreed + disagreed)
    m.source(ShadowSeries(lambda: {"iris": t}, lambda: {"iris": inflight}))
    return m


def test_other_sources_merge_sample_by_sample_and_the_agreement_is_the_groups() -> None:
    """The shadow series (another source): counters summed, in-flight copies summed, and
    the agreement ratio recomputed from the group's comparisons, not either worker's."""
    own = capture(_shadow(9, 1, 2), new_stats())  # 90 % alone
    sib = capture(_shadow(1, 9, 3), new_stats())  # 10 % alone
    add_counted(own, sib)
    add_gauges(own, [sib])
    out = samples_of(own)
    assert sample(out, "killgate_shadow_copies_total", route="iris", version="v2",
                result="sent") == 20
    assert sample(out, "killgate_shadow_inflight", route="iris") == 5
    assert sample(out, "killgate_shadow_agreement_ratio", route="iris", version="v2") == 0.5
    assert sample(out, "killgate_shadow_duration_seconds_count", route="iris", version="v2",
                side="primary") == 0
