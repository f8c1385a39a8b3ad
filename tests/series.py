"""Request series for the `--workers N` metrics tests (test_groupseries, test_workers):
real `RequestStats` fed real `RequestRecord`s, and the merged series as a dict to look
samples up in."""

from __future__ import annotations

from gateway.config_telemetry import BucketsConfig
from gateway.telemetry.exposition import as_metric, expand
from gateway.telemetry.grouprender import render
from gateway.telemetry.groupseries import Raw
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.requests import RequestStats

__all__ = ["EXPECTED", "new_stats", "record_request", "sample", "samples_of"]

EXPECTED = {"iris": {"v1": 90.0, "v2": 10.0}}


def new_stats() -> RequestStats:
    """Request series with the default buckets; route iris is meant to split 90/10."""
    return RequestStats(BucketsConfig(), lambda: EXPECTED)


def record_request(stats: RequestStats, version: str, status: int = 200,
                   took: float = 0.05) -> None:
    """One finished request of route iris (stable v1) answered by `version`."""
    rec = RequestRecord(0.0)
    rec.route, rec.version, rec.decision, rec.stable = "iris", version, "weighted", "v1"
    rec.status, rec.end, rec.upstream = status, took, took / 2
    stats.done(rec)


def samples_of(raw: Raw, stats: RequestStats | None = None, workers: int = 2) -> dict:
    """Every sample the group's /metrics shows, by (name, sorted labels)."""
    fams, _ = render(raw, stats or new_stats(), workers)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in map(as_metric, expand(fams))
            for s in f.samples}


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
