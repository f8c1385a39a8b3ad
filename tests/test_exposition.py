"""telemetry/exposition.py writes /metrics itself (prometheus_client's generic formatting
held the loop 215-360 ms at 100 routes): its bytes must be the library's, byte for byte,
in every format the Accept header can pick. Each case writes the same families both ways
and compares; escapes, special values, families without labels or samples, histograms
with a negative first bucket, counters named without _total, the library's own families
between ours, and the real sources (metrics values, request series, shadow series)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.config_telemetry import BucketsConfig
from gateway.domain.shadowstats import Tally
from gateway.telemetry.exposition import (
    Deferred,
    Family,
    Rows,
    as_metric,
    chunks,
    encoding,
    expand,
)
from gateway.telemetry.groupseries import Family as GroupFamily
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.requests import RequestStats
from gateway.telemetry.shadowmetrics import ShadowSeries

pytestmark = pytest.mark.timeout(30)

ACCEPTS = [
    None, "", "text/plain", "text/plain; version=0.0.4", "*/*",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=dots",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=2.0.0",
    "application/openmetrics-text;version=0.0.1,text/plain;q=0.5",
    # what Prometheus 2.42 sends
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=garbage", ";;;,,", "text/plain;version=",
]
ODD = ['plain', 'back\\slash', 'quo"te', 'new\nline', 'ünï€ode', '', 'a,b=c}{']
VALUES = [0, 0.0, -0.0, 1, 1.5, -2.25, 1e-7, 123456.0, 999999.0, 1_000_000.0, 1234567.0,
          1e21, 2 ** 63, 7, math.inf, -math.inf, math.nan, True, 0.1 + 0.2]


class _Registry:
    def __init__(self, fams: list[Metric]) -> None:
        self.fams = fams

    def collect(self) -> Iterator[Metric]:
        yield from self.fams


def _both(fams: list[Family], accept: str | None) -> tuple[bytes, bytes]:
    fmt = encoding(accept)
    ours = b"".join(chunks(fams, fmt))
    theirs = fmt.encoder(_Registry([as_metric(f) for f in expand(fams)]))
    return ours, theirs


def _odd_families() -> list[Family]:
    rows = [((v, f"x{i}"), VALUES[i % len(VALUES)]) for i, v in enumerate(ODD)]
    hist_rows = [((v, "2xx"), ("0.005", "0.1", "2.5", "10.0", "1e-05", "+Inf"),
                  [0.0, 1.0, 2.0, 2.0, 3.0, 1e6 + i], 0.125 * i) for i, v in enumerate(ODD)]
    lib = GaugeMetricFamily("killgate_library_gauge", "the library's own", labels=["k"])
    lib.add_metric(["v\"1"], 3.5)
    lib_counter = CounterMetricFamily("killgate_library_total", "a counter", labels=["k"])
    lib_counter.add_metric(["x"], 2)
    return [
        Rows("killgate_odd_total", "counter", 'help with \\ and "quotes"\nand a line',
             ("route", "version"), rows),
        Rows("killgate_no_suffix", "counter", "a counter named without _total", ("a",),
             [(("x",), 4.0)]),
        Rows("killgate_bare", "gauge", "no labels", (), [((), 12.0), ((), -0.0)]),
        Rows("killgate_empty", "gauge", "no samples", ("route",), []),
        lib,
        Rows("killgate_odd_seconds", "histogram", "le between the labels", ("route", "code"),
             hist_rows),
        Rows("killgate_first_seconds", "histogram", "le first", ("zone",),
             [(("z",), ("1.0", "+Inf"), [1.0, 2.0], 3.0)]),
        Rows("killgate_negative", "histogram", "no _count, _sum", ("a",),
             [(("x",), ("-1.0", "0.0", "+Inf"), [1.0, 1.0, 2.0], -0.5)]),
        Rows("killgate_fewer", "gauge", "fewer values than names", ("a", "b"),
             [(("only",), 1.0)]),
        Rows("killgate:colon_name", "gauge", "a colon", ("a",), [(("x",), 1.0)]),
        Rows("killgate_bad_label", "gauge", "a label name the escapings rewrite",
             ("bad.name",), [(("x",), 1.0)]),
        lib_counter,
        Deferred(lambda: iter([None, Rows("killgate_later", "gauge", "made later", ("a",),
                                          [(("y",), 2.0)]), None, None])),
    ]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_every_kind_of_family_is_written_as_the_library_writes_it(accept: str | None) -> None:
    ours, theirs = _both(_odd_families(), accept)
    assert ours == theirs


def _real() -> Metrics:
    m = Metrics()
    stats = RequestStats(BucketsConfig(routes={"r1": (1e-5, 0.1, 0.2, 1e6)}),
                         lambda: {f"r{i}": {"v1": 90.0, "v2": 10.0} for i in range(4)})
    m.source(stats)
    for i in range(4):
        for version in ("v1", "v2"):
            for decision in ("weighted", "pinned", "failover"):
                for status in (200, 404, 499, 503, 0):
                    rec = RequestRecord(0.0)
                    rec.route, rec.version, rec.decision = f"r{i}", version, decision
                    rec.stable, rec.status, rec.end = "v1", status, 0.001 * (i + status % 7)
                    rec.upstream = rec.end / 2
                    rec.first_byte = 0.0003 if status == 200 else 0.0
                    stats.done(rec)
    m.inc("killgate_failovers_total", ('r"0', "v\\1"), 3, ("route", "version"))
    m.set("killgate_inflight_requests", 2)
    tallies = {}
    for i, route in enumerate(("r0", "r1", "r\\2")):
        t = tallies[route] = Tally("v2", "spec")
        for outcome in ("agreed", "noise", "disagreed")[:i + 1]:
            t.outcomes[outcome] = t.outcomes.get(outcome, 0) + i + 1
        t.copy("sent", 4 + i)
        t.failures["timeout"] = i
        t.differences["value"] = 2 * i
        t.primary_ms[i] += 3
        t.shadow_ms[-1] += 1
        t.primary_s += 0.25 * i
    m.source(ShadowSeries(lambda: tallies, lambda: {"r0": 2, "r1": 0}))
    return m


@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_page_of_the_real_sources_is_the_librarys(accept: str | None) -> None:
    """Metrics' own series, the request series (per-route buckets too), as /metrics
    writes them (Metrics.exposition) and as the library writes the same collection."""
    m = _real()
    fmt = encoding(accept)
    body, got_type = m.exposition(accept)
    assert got_type == fmt.content_type
    assert body == fmt.encoder(m.registry)


def test_the_page_is_the_values_when_it_was_asked_for() -> None:
    """A page's values are taken at the call (the loop's one step): counting after it,
    while its slices are written, changes the next page, not this one."""
    m = _real()
    before, _ = m.exposition(None)
    parts, _ = m.page(None)
    m.inc("killgate_failovers_total", ('r"0', "v\\1"), 1, ("route", "version"))
    rec = RequestRecord(0.0)
    rec.route, rec.version, rec.decision, rec.stable = "r0", "v1", "weighted", "v1"
    rec.status, rec.end = 200, 0.5
    next(iter(m.sources)).done(rec)  # type: ignore[attr-defined]
    assert b"".join(parts) == before
    assert m.exposition(None)[0] != before


def test_a_malformed_accept_header_gets_the_text_format() -> None:
    fmt = encoding("application/openmetrics-text;version=x.y")
    assert not fmt.openmetrics and fmt.content_type.startswith("text/plain")


def test_a_group_snapshot_holds_the_same_samples_made_from_rows() -> None:
    """Under --workers N a worker's other sources (shadow series) are kept in its snapshot
    as samples: made from `Rows` directly (taken on the loop in one go), they must be the
    samples the library's `Metric` of the same rows has, names, label order and values."""
    rows = [f for f in expand(_odd_families()) if isinstance(f, Rows)]
    rows += [f for src in _real().sources if isinstance(src, ShadowSeries)
             for f in src.families()]
    for r in rows:
        made, via = GroupFamily.of_rows(r), GroupFamily.of(as_metric(r))
        assert made == via, r.name
        assert list(made.samples) == list(via.samples), r.name  # (and in the same order)
