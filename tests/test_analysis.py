"""Canary verdicts (pure): failed, passed, inconclusive and error are different states."""

from __future__ import annotations

import json

from gateway.config import AnalysisConfig
from gateway.domain.analysis import LATENCY_BOUNDS_MS, Sample, analyze, merge, percentile
from gateway.domain.stats import WindowStats

CFG = AnalysisConfig(window="2s", interval="500ms", min_requests=20,
                     max_error_rate_increase=0.05, max_p99_ratio=2.0)


def sample(requests: int, errors: int, latency_ms: float = 4.0) -> Sample:
    s = Sample(requests, errors)
    idx = next(i for i, b in enumerate(LATENCY_BOUNDS_MS) if latency_ms <= b)
    s.hist[idx] = requests
    return s


def test_error_rate_increase_fails() -> None:
    v = analyze(sample(100, 30), sample(900, 9), CFG, 2)
    assert v.status == "failed" and "error rate" in v.reasons[0]
    assert v.evidence["canary"]["errors"] == 30


def test_latency_ratio_fails() -> None:
    v = analyze(sample(100, 0, 40), sample(900, 0, 4), CFG, 2)
    assert v.status == "failed" and "p99" in v.reasons[0]


def test_healthy_canary_passes() -> None:
    assert analyze(sample(100, 1), sample(900, 5), CFG, 2).status == "passed"


def test_too_little_data_is_inconclusive_never_failed() -> None:
    v = analyze(sample(5, 5), sample(900, 0), CFG, 2)
    assert v.status == "inconclusive"


def test_missing_measurement_is_error() -> None:
    assert analyze(None, sample(10, 0), CFG, 2).status == "error"


def test_merge_and_percentile() -> None:
    m = merge([sample(10, 1, 1), sample(90, 2, 40)])
    assert (m.requests, m.errors) == (100, 3)
    assert percentile(m, 0.5) == 50 and percentile(m, 0.05) == 1
    assert percentile(Sample(), 0.99) is None


def test_window_stats_slide() -> None:
    w = WindowStats()
    for t in range(10):
        w.record("r", "v", t % 2 == 0, 0.004, 1000.0 + t)
    s = w.window("r", 4, 1009.5)["v"]
    assert s.requests == 5 and s.errors == 2  # seconds 1005..1009 overlap the window


def test_a_quantile_beyond_the_last_bound_is_that_bound_and_strict_json() -> None:
    """Beyond the last bucket the quantile was `inf`: the analysis evidence (audit events,
    the webhook) and the shadow report then carried `Infinity`, which JSON has not (a
    strict reader such as JavaScript's JSON.parse refuses the whole answer)."""
    beyond = Sample(requests=10, errors=0, hist=[0] * len(LATENCY_BOUNDS_MS) + [10])
    assert percentile(beyond, 0.99) == LATENCY_BOUNDS_MS[-1]
    cfg = AnalysisConfig(min_requests=5)
    v = analyze(beyond, Sample(requests=10, errors=0, hist=[10] + [0] * len(LATENCY_BOUNDS_MS)),
                cfg, 60.0)
    json.dumps(v.evidence, allow_nan=False)  # (raised ValueError before)
    assert v.status == "failed" and "p99 30000 ms" in v.reasons[0]


def test_a_canary_beyond_the_last_bucket_still_fails_against_a_stable_within_it() -> None:
    """(final review of 45cb5d5) Reported as the last bound (30000) for JSON's sake, the
    quantile beyond it was also compared as 30000: a canary answering in a minute against
    a stable at 10-30 s (an LLM route) was x1.00 and passed, where it failed before."""
    n = len(LATENCY_BOUNDS_MS)
    stable = Sample(requests=100, errors=0, hist=[0] * (n - 1) + [100, 0])  # 10 s .. 30 s
    slow = Sample(requests=100, errors=0, hist=[0] * n + [100])  # beyond 30 s
    v = analyze(slow, stable, AnalysisConfig(min_requests=5), 60.0)
    json.dumps(v.evidence, allow_nan=False)
    assert v.status == "failed", v.reasons
    assert "p99 30000 ms or more" in v.reasons[0] and "beyond" in v.reasons[0]
    assert v.evidence["canary"]["p99_ms"] == 30000
    # both beyond the last bucket: nothing tells them apart (as before: not a failure)
    assert analyze(slow, slow, AnalysisConfig(min_requests=5), 60.0).status == "passed"
    # the ratio that would have been exactly the threshold is beyond it
    mid = Sample(requests=100, errors=0, hist=[0] * (n - 2) + [100, 0, 0])  # 5 s .. 10 s
    assert analyze(slow, mid, AnalysisConfig(min_requests=5, max_p99_ratio=3), 60.0).status \
        == "failed"
