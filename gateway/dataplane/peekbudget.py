"""`server.model_peek_memory`: the bytes of request bodies held at once, per process, while
their `model` is read (a request routed by its body's model keeps up to `model_peek_bytes`
of it from the peek to its end, so that it can be sent again on a failover).

Counted as the bytes arrive, up to the window (reserving the window at a head let a few
clients sending a byte now and then spend the budget), given back when the request ends.
One object on the proxy, not three attributes: CPython 3.11 keeps an object's attributes
in a shared-key table only up to 30 of them, and the proxy past that cost every request
~2,000 instructions of slower attribute reads (benchmarks/instructions.py, RESULTS §27).
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["PeekBudget"]

K = TypeVar("K")


class PeekBudget(Generic[K]):
    def __init__(self, limit: int, window: int) -> None:
        self.limit = limit
        self.window = window
        self.held = 0  # bytes counted now, every request's
        self.by: dict[K, int] = {}  # request -> what it holds (counted)

    def open(self, key: K) -> None:
        """`key` reads its body for its `model`: counted from now (0 so far)."""
        self.by[key] = 0

    def charge(self, key: K, held: int) -> bool:
        """`key`'s body holds `held` bytes: counted (up to the window). False: beyond the
        budget (nothing counted). A request that ended (given back) counts nothing."""
        held = min(held, self.window)
        had = self.by.get(key)
        if had is None or held <= had:
            return True
        if self.held + held - had > self.limit:
            return False
        self.held += held - had
        self.by[key] = held
        return True

    def release(self, key: K) -> None:
        """`key` ended, however: what it held is given back."""
        self.held -= self.by.pop(key, 0)
