"""Canary analysis: compare a canary with its stable over a window, give a verdict.

Pure (no I/O, no clock). Verdicts, kept apart from actions (Argo Rollouts' model):
`passed`, `failed` (the canary is measurably worse), `inconclusive` (too little data:
never promotes, never rolls back), `error` (the measurement itself broke). Only `failed`
triggers an automatic rollback. Latency is compared on p99 from merged histograms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config import AnalysisConfig

__all__ = ["LATENCY_BOUNDS_MS", "Sample", "Verdict", "analyze", "merge", "percentile"]

# Upper bounds (ms) of the latency histogram buckets; the last bucket is open-ended.
LATENCY_BOUNDS_MS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
                     1000, 1500, 2000, 3000, 5000, 10000, 30000)


@dataclass(slots=True)
class Sample:
    requests: int = 0
    errors: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    ejections: int = 0  # times outlier detection ejected this version in the window

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "hist": self.hist,
                "ejections": self.ejections}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sample:
        hist = [int(x) for x in d.get("hist", [])]
        if len(hist) != len(LATENCY_BOUNDS_MS) + 1:
            raise ValueError("histogram has the wrong number of buckets")
        return cls(int(d["requests"]), int(d["errors"]), hist, int(d.get("ejections", 0)))


def merge(samples: list[Sample]) -> Sample:
    out = Sample()
    for s in samples:
        out.requests += s.requests
        out.errors += s.errors
        out.hist = [a + b for a, b in zip(out.hist, s.hist, strict=True)]
        out.ejections += s.ejections
    return out


def _bucket(s: Sample, q: float) -> int | None:
    """Index of the bucket holding the q-quantile (len(LATENCY_BOUNDS_MS): beyond the last
    bound); None without data."""
    total = sum(s.hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(s.hist):
        seen += n
        if seen >= rank:
            return i
    return len(LATENCY_BOUNDS_MS)


def percentile(s: Sample, q: float) -> float | None:
    """Upper bound (ms) of the bucket holding the q-quantile; None without data. Beyond the
    last bound: the last bound (30000, "30 s or more"). It goes out as JSON (analysis
    evidence in audit events and webhooks, the shadow report), which has no Infinity: an
    `Infinity` there broke every strict reader (JavaScript's JSON.parse, Go). Comparisons
    use `_judged`, which keeps "beyond" apart from the last bucket."""
    i = _bucket(s, q)
    return None if i is None else float(LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)])


def _judged(s: Sample, q: float) -> float | None:
    """The q-quantile as compared: `inf` beyond the last bound (a canary answering in a
    minute is not a stable's 10-30 s)."""
    i = _bucket(s, q)
    return None if i is None else (float(LATENCY_BOUNDS_MS[i]) if i < len(LATENCY_BOUNDS_MS)
                                   else float("inf"))


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # passed | failed | inconclusive | error
    reasons: tuple[str, ...]
    evidence: dict[str, Any]


def analyze(canary: Sample | None, stable: Sample | None, cfg: AnalysisConfig,
            window: float) -> Verdict:
    if canary is None or stable is None:
        return Verdict("error", ("the counts could not be read from the state store",), {})
    c_p99, s_p99 = percentile(canary, 0.99), percentile(stable, 0.99)
    evidence = {
        "window_s": window, "min_requests": cfg.min_requests,
        "canary": {"requests": canary.requests, "errors": canary.errors,
                   "error_rate": round(canary.error_rate, 4), "p99_ms": c_p99,
                   "ejections": canary.ejections},
        "stable": {"requests": stable.requests, "errors": stable.errors,
                   "error_rate": round(stable.error_rate, 4), "p99_ms": s_p99},
        "max_error_rate_increase": cfg.max_error_rate_increase,
        "max_p99_ratio": cfg.max_p99_ratio,
    }
    if canary.ejections and canary.errors:
        # Outlier detection already pulled the canary out of traffic for failing: that is
        # evidence enough, even before `min_requests` could accumulate.
        return Verdict("failed", (f"the canary was ejected {canary.ejections} time(s) by "
                                  f"outlier detection ({canary.errors} failed of "
                                  f"{canary.requests})",), evidence)
    if canary.requests < cfg.min_requests:
        return Verdict("inconclusive", (f"the canary had {canary.requests} requests in the "
                                        f"window, fewer than {cfg.min_requests}",), evidence)
    reasons = []
    # With too little stable traffic, the canary is judged against zero errors.
    baseline = stable.error_rate if stable.requests >= cfg.min_requests else 0.0
    increase = canary.error_rate - baseline
    if increase > cfg.max_error_rate_increase:
        reasons.append(f"error rate {canary.error_rate:.2%} vs {baseline:.2%} for stable "
                       f"(+{increase:.2%} > +{cfg.max_error_rate_increase:.2%})")
    c_cmp, s_cmp = _judged(canary, 0.99), _judged(stable, 0.99)
    if (stable.requests >= cfg.min_requests and c_cmp is not None and s_cmp is not None
            and c_p99 is not None and s_p99 is not None
            and c_cmp / max(s_cmp, 1.0) > cfg.max_p99_ratio
            and c_cmp - s_cmp > cfg.p99_slack * 1000):
        reasons.append(f"p99 {c_p99:g} ms or more (beyond the last bucket) vs {s_p99:g} ms "
                       f"for stable (> x{cfg.max_p99_ratio:g})" if c_cmp == float("inf") else
                       f"p99 {c_p99:g} ms vs {s_p99:g} ms for stable "
                       f"(x{c_p99 / max(s_p99, 1.0):.2f} > x{cfg.max_p99_ratio:g})")
    if reasons:
        return Verdict("failed", tuple(reasons), evidence)
    return Verdict("passed", ("within every threshold",), evidence)
