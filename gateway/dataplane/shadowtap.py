"""A shadow tap: one sampled request whose answer is on its way to the client, collected
(bounded) for the copy that is compared with it.

Owns the answer's assembly, the `max_answer_bytes` bound and the route's slot the tap holds
until the copy takes it or it is given back; it hands the copy to the mirror it is given
(`Copies`, shadow.py's `Mirror`). Never raises into the request; no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from gateway.dataplane.jsonpeek import ModelField
from gateway.domain.comparison import Answer
from gateway.domain.routing import RoutePlan, Target

__all__ = ["Copies", "Tap", "content_coding", "media_type"]


def media_type(raw: Iterable[tuple[bytes, bytes]]) -> str:
    """The media type of a Content-Type among `raw` (lower-cased, no parameters), or ""."""
    for name, value in raw:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower().decode("latin-1")
    return ""


def content_coding(raw: Iterable[tuple[bytes, bytes]]) -> str:
    """The Content-Encoding among `raw` (lower-cased), or "" (the comparison decodes it)."""
    for name, value in raw:
        if name.lower() == b"content-encoding":
            return value.strip().lower().decode("latin-1")
    return ""


class Copies(Protocol):
    """What a tap is handed of the mirror: the slots, the counts, the kill check, the copy."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def killed(self, plan: RoutePlan, version: str) -> bool: ...

    def stopped(self, plan: RoutePlan) -> bool: ...

    def count(self, plan: RoutePlan, result: str) -> None: ...

    def release(self, route: str, lease: int) -> None: ...

    def launch(self, tap: Tap, lease: int, primary: Answer, primary_s: float) -> None: ...


class Tap:
    """One sampled request whose answer is on its way to the client: collects that answer
    (bounded), then hands the copy to the mirror. It holds one of the route's
    `max_inflight` slots from the start (a streamed answer being assembled counts, so memory
    stays bounded: max_inflight slots, each the request and up to three answers, README);
    the copy keeps it, else it is given back when the answer is refused, or when the tap is
    dropped unfinished (a failed stream, a client gone)."""

    __slots__ = ("body", "chunks", "client", "field", "lease", "method", "mirror", "plan",
                 "raw_headers", "raw_target", "served", "size", "span", "started",
                 "traceparent")

    def __init__(self, mirror: Copies, plan: RoutePlan, served: Target, method: bytes,
                 raw_target: bytes, raw_headers: list[tuple[bytes, bytes]], body: bytes,
                 field: ModelField | None, client: bytes, started: float, lease: int) -> None:
        self.mirror, self.plan, self.served = mirror, plan, served
        self.method, self.raw_target, self.raw_headers = method, raw_target, raw_headers
        self.body, self.field, self.client, self.started = body, field, client, started
        self.chunks: list[bytes] | None = []
        self.size = 0
        self.lease = lease  # 0 once handed to the copy or given back
        #: the request's trace span (`spans.RequestSpan`, when traced) and the client's
        #: first traceparent: the copy's own traceparent is made from them (shadowsend.py)
        self.span: Any = None
        self.traceparent: bytes | None = None

    def __del__(self) -> None:
        # never finished (a failed stream, a client gone): the slot goes back now; if a
        # reference cycle delays this, the lease still ends with the route's total timeout
        lease = getattr(self, "lease", 0)  # (unset if __init__ failed)
        if lease:
            self.mirror.release(self.plan.name, lease)

    def feed(self, data: bytes) -> None:
        """A piece of a streamed answer (as the backend sent it)."""
        chunks = self.chunks
        if chunks is None:
            return
        self.size += len(data)
        assert self.plan.config.shadow is not None
        if self.size > self.plan.config.shadow.max_answer_bytes:
            self.chunks = None  # too large to compare: no copy
            return
        chunks.append(data)

    def end(self, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        """A streamed answer reached its clean end."""
        if self.chunks is None:
            self._refuse()
            return
        self.answer(status, raw_headers, b"".join(self.chunks))

    def answer(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """The client's whole answer (its status, fields and body)."""
        sh = self.plan.config.shadow
        assert sh is not None
        lease = self.lease
        if not lease:
            return
        if len(body) > sh.max_answer_bytes:
            self._refuse()
            return
        mirror = self.mirror
        shadow = self.plan.shadow
        if shadow is not None and mirror.killed(self.plan, shadow.name):
            # the shadow version (or the route) was killed while the primary answered: no
            # copy reaches it, as no tap is made after the kill ("down")
            self.chunks = None
            mirror.release(self.plan.name, lease)
            self.lease = 0
            mirror.count(self.plan, "down")
            return
        if mirror.stopped(self.plan):  # a reload stopped the copies while it answered
            self.chunks = None
            mirror.release(self.plan.name, lease)
            self.lease = 0
            return
        self.chunks = None
        self.lease = 0  # the copy has the slot now
        mirror.launch(self, lease, Answer(status, body, media_type(raw_headers),
                                          content_coding(raw_headers)),
                      mirror.loop.time() - self.started)

    def _refuse(self) -> None:
        self.chunks = None
        if self.lease:
            self.mirror.release(self.plan.name, self.lease)
            self.lease = 0
        self.mirror.count(self.plan, "answer")
