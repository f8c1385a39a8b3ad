"""The retry budget of opt-in retries of delivered requests (CONTRACT §3).

Pure. A delivered request is retried on another version only when its route opts in with
`retry` (inference calls are not always idempotent), and only within the route's budget;
which answers qualify is the attempts plan's business (`dataplane/attempts.py`).
"""

from __future__ import annotations

__all__ = ["RetryBudget"]


class RetryBudget:
    """Retries stay within `budget` x recent requests (10 s windows), at least 3 (Envoy's
    min_retry_concurrency), so a failing fleet is not hit with a retry storm."""

    __slots__ = ("requests", "retries", "start")

    def __init__(self) -> None:
        self.start = 0.0
        self.requests = 0
        self.retries = 0

    def request(self, now: float) -> None:
        if now - self.start > 10.0:
            self.start, self.requests, self.retries = now, 0, 0
        self.requests += 1

    def allow(self, now: float, budget: float) -> bool:
        if self.retries + 1 > max(3.0, budget * self.requests):
            return False
        self.retries += 1
        return True
