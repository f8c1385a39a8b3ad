"""The series of a `--workers N` process group: snapshots as plain data, and their merge.

Owns `Raw` (one worker's series as plain data: metrics.py's values, requests.py's bucket
counts and last-minute answers, other sources' families as samples) and the merge (counters
and histograms summed, each gauge by its meaning: `GAUGES`); rendering the result is
grouprender.py's, its file format groupfile.py's. Pure: no files,
no clock, no asyncio. Imports telemetry, domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client.metrics_core import Metric

from gateway.config_telemetry import BucketsConfig
from gateway.domain.compare import AGREED, DISAGREED, NOISE
from gateway.telemetry.exposition import Rows, expand
from gateway.telemetry.metrics import Metrics, families_of, kind_of
from gateway.telemetry.requestrows import Key
from gateway.telemetry.requests import RequestStats

__all__ = [
    "GAUGES",
    "Family",
    "Raw",
    "add_counted",
    "add_gauges",
    "capture",
]

# How each gauge of the group is made from the workers' values. "sum": per-worker amounts;
# "min"/"max": the worst worker, as an alert wants it (the generation every live worker
# has applied, the stalest one's state age, ...); "own": the answering worker's value
# (state every worker derives from the same replicated document), else the highest of the
# others'; "split": recomputed from the summed answers (requests.py); "ratio": recomputed
# from the summed comparisons (shadowmetrics.py). A test asks for a rule for every
# documented gauge; one without a rule is "own".
GAUGES: dict[str, str] = {
    "killgate_inflight_requests": "sum",
    "killgate_config_reload_waiting": "max",
    "killgate_config_refused": "max",
    "killgate_admin_auth_broken": "max",
    "killgate_state_generation": "min",
    "killgate_kill_state_age_seconds": "max",
    "killgate_state_store_connected": "min",
    "killgate_state_pushes_cut": "max",
    "killgate_state_writes_refused": "max",
    "killgate_state_replicas": "min",  # (the worker that saw the fewest)
    "killgate_state_min_replicas": "max",
    "killgate_state_stale": "max",
    "killgate_state_newer_document": "max",
    "killgate_state_snapshot_failing": "max",
    "killgate_local_kills": "max",
    "killgate_fail_closed": "max",
    "killgate_kills_unrouted": "max",
    "killgate_overrides_unservable": "max",
    "killgate_audit_mirror_ok": "min",
    "killgate_upstream_health": "min",
    "killgate_split_window_answers": "split",
    "killgate_split_expected_share": "split",
    "killgate_split_share": "split",
    "killgate_split_drift": "split",
    "killgate_drills_open": "own",
    "killgate_drills_overdue": "own",
    "killgate_drill_last_passed": "own",
    "killgate_drill_last_timestamp_seconds": "own",
    "killgate_drill_last_duration_seconds": "own",
    "killgate_drill_last_leaks": "own",
    "killgate_drill_last_errors": "own",
    "killgate_drill_last_seconds": "own",
    "killgate_metrics_workers": "own",
    "killgate_build_info": "max",  # (each version a worker runs: one series each)
    "killgate_shadow_inflight": "sum",
    "killgate_shadow_agreement_ratio": "ratio",  # from the summed comparisons
}
_SUMMED = frozenset({"counter", "histogram", "summary", "gaugehistogram"})

K = TypeVar("K")
Labels = tuple[str, ...]
Counts = tuple[list[float], list[float], list[float]]  # duration, upstream, ttfb
SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # sample name, labels in their order


@dataclass
class Family:
    """A family of another source (not metrics.py's values, not the request series), as
    samples: counters and histograms sum sample by sample."""

    name: str
    type: str
    help: str
    samples: dict[SampleKey, float] = field(default_factory=dict)

    @classmethod
    def of(cls, m: Metric) -> Family:
        return cls(m.name, m.type, m.documentation,
                   {(s.name, tuple(s.labels.items())): float(s.value) for s in m.samples})

    @classmethod
    def of_rows(cls, r: Rows) -> Family:
        """`of(as_metric(r))`, without the `Metric`: its samples' names, labels in the
        same order (the label names', then `le`) and values (~3x cheaper: a worker's own
        series are taken on the loop in one go, shadow series of every route included)."""
        samples: dict[SampleKey, float] = {}
        if r.type == "histogram":
            bucket, count, total = f"{r.name}_bucket", f"{r.name}_count", f"{r.name}_sum"
            for values, les, counts, s in r.rows:
                labels = tuple(zip(r.labels, values, strict=False))
                for le, c in zip(les, counts, strict=True):
                    samples[(bucket, (*labels, ("le", le)))] = float(c)
                if float(les[0]) >= 0:
                    samples[(count, labels)] = float(counts[-1])
                    samples[(total, labels)] = float(s)
        else:
            name = f"{r.name}_total" if r.type == "counter" else r.name
            for values, v in r.rows:
                samples[(name, tuple(zip(r.labels, values, strict=False)))] = float(v)
        return cls(r.name, r.type, r.help, samples)

    def metric(self) -> Metric:
        m = Metric(self.name, self.help, self.type)
        for (name, labels), value in self.samples.items():
            m.add_sample(name, dict(labels), value)
        return m


@dataclass
class Raw:
    """A worker's series as plain data (what its snapshot file holds)."""

    #: metrics.py's simple series: name -> (label names, labels -> value)
    values: dict[str, tuple[Labels, dict[Labels, float]]] = field(default_factory=dict)
    #: requests.py's entries: key -> bucket counts (each list: buckets, then the sum)
    entries: dict[Key, Counts] = field(default_factory=dict)
    #: answers per (route, version) in the last minute (killgate_split_window_answers)
    split: dict[tuple[str, str], float] = field(default_factory=dict)
    #: the families of the other sources
    families: dict[str, Family] = field(default_factory=dict)
    #: the histogram boundaries the entries were counted in (None: an older snapshot)
    buckets: BucketsConfig | None = None

    def counted(self) -> Raw:
        """Only what sums (counters, histograms): what a replacement worker carries on."""
        return Raw({n: (names, dict(v)) for n, (names, v) in self.values.items()
                    if kind_of(n)[0] == "counter"},
                   {k: (list(a), list(b), list(c)) for k, (a, b, c) in self.entries.items()},
                   families={n: Family(f.name, f.type, f.help, dict(f.samples))
                             for n, f in self.families.items() if f.type in _SUMMED})


def capture(metrics: Metrics, stats: RequestStats) -> Raw:
    """This worker's series now (refreshed as for a scrape)."""
    raw = Raw({name: (names, series) for name, names, series in metrics.dump()},
              buckets=stats.buckets)
    for key, e in list(stats.entries.items()):
        raw.entries[key] = (list(e.duration[1]), list(e.upstream[1]), list(e.ttfb[1]))
    raw.split = {k: float(n) for k, n in stats.split()[0].items()}
    for src in metrics.sources:
        if src is not stats:
            for f in expand(families_of(src)):
                raw.families[f.name] = Family.of_rows(f) if isinstance(f, Rows) else Family.of(f)
    return raw


def add_counted(into: Raw, more: Raw) -> int:
    """Sum the counters and histograms of `more` into `into`; the number of histogram
    entries skipped because their bucket boundaries differ (a worker on another config)."""
    for name, (names, series) in more.values.items():
        if kind_of(name)[0] != "counter":
            continue
        _, mine = into.values.setdefault(name, (names, {}))
        for labels, v in series.items():
            mine[labels] = mine.get(labels, 0.0) + v
    for name, fam in more.families.items():
        if fam.type in _SUMMED:
            acc = into.families.setdefault(name, Family(fam.name, fam.type, fam.help))
            for k, v in fam.samples.items():
                acc.samples[k] = acc.samples.get(k, 0.0) + v
    skipped = 0
    for key, counts in more.entries.items():
        cur = into.entries.get(key)
        if cur is None:
            into.entries[key] = (list(counts[0]), list(counts[1]), list(counts[2]))
            continue
        if any(len(a) != len(b) for a, b in zip(cur, counts, strict=True)):
            skipped += 1
            continue
        for a, b in zip(cur, counts, strict=True):
            for i, v in enumerate(b):
                a[i] += v
    return skipped


def add_gauges(into: Raw, others: Iterable[Raw]) -> None:
    """Each gauge by its rule (`GAUGES`); the last minute's answers summed."""
    others = list(others)
    for other in others:
        for (route, version), n in other.split.items():
            into.split[(route, version)] = into.split.get((route, version), 0.0) + n
    for other in others:
        for name, (names, series) in other.values.items():
            if kind_of(name)[0] != "counter":
                _combine(into.values.setdefault(name, (names, {}))[1], series, name)
        for name, fam in other.families.items():
            if fam.type not in _SUMMED:
                cur = into.families.setdefault(name, Family(fam.name, fam.type, fam.help))
                _combine(cur.samples, fam.samples, name)
    _agreement(into)


def _combine(mine: dict[K, float], more: dict[K, float], name: str) -> None:
    rule = GAUGES.get(name, "own")
    for key, v in more.items():
        cur = mine.get(key)
        if cur is None:
            mine[key] = v
        elif rule == "sum":
            mine[key] = cur + v
        elif rule == "min":
            mine[key] = min(cur, v)
        elif rule == "max":
            mine[key] = max(cur, v)
        # "own": the answering worker's value (first in) stays


def _agreement(raw: Raw) -> None:
    """killgate_shadow_agreement_ratio of the group, as shadowmetrics.py computes one
    process's: (agreed + noise) / (agreed + noise + disagreed), from the summed outcomes."""
    comparisons = raw.families.get("killgate_shadow_comparisons")
    ratio = raw.families.get("killgate_shadow_agreement_ratio")
    if comparisons is None or ratio is None:
        return
    outcomes: dict[tuple[tuple[str, str], tuple[str, str]], dict[str, float]] = {}
    for (_, labels), n in comparisons.samples.items():
        lab = dict(labels)
        key = (("route", lab.get("route", "")), ("version", lab.get("version", "")))
        per = outcomes.setdefault(key, {})
        per[lab.get("outcome", "")] = per.get(lab.get("outcome", ""), 0.0) + n
    ratio.samples.clear()
    for key, o in outcomes.items():
        agreed = o.get(AGREED, 0.0) + o.get(NOISE, 0.0)
        compared = agreed + o.get(DISAGREED, 0.0)
        if compared:
            ratio.samples[(ratio.name, tuple(key))] = agreed / compared
