"""One shadow copy on the wire: the request sent again to a version, through the copies'
own connection pools and with the shadow's own timeouts, and its answer assembled (bounded).

Owns the copy's head (`x-killgate-shadow: 1`, the client's x-forwarded-* lines, the version's
model name in the body) and the kinds of a copy that got no answer (`failure`: a metric
label). Errors leave as gateway.errors.Upstream* or TooLarge, for the mirror to count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from random import getrandbits

from gateway.config_shadow import ShadowConfig
from gateway.dataplane.inflight import Aborted, Handle
from gateway.dataplane.jsonpeek import rewrite_model
from gateway.dataplane.requesthead import request_head
from gateway.dataplane.shadowtap import Tap, content_coding, media_type
from gateway.dataplane.spans import AttemptSpan
from gateway.dataplane.upstream import Upstreams
from gateway.domain.comparison import Answer
from gateway.domain.routing import RoutePlan, Target
from gateway.errors import (
    UpstreamClosed,
    UpstreamError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.telemetry.w3c import format_traceparent, parse_traceparent

__all__ = ["SHADOW_HEADER", "Stopped", "TooLarge", "failure", "send"]

SHADOW_HEADER = b"x-killgate-shadow: 1\r\n"


class TooLarge(Exception):
    """The copy's answer is longer than `max_answer_bytes` (too large to compare)."""


class Stopped(Exception):
    """A reload stopped the copy while it waited for its connection: nothing went out."""


#: whether a kill applied after a plan routed its request covers the route or a version
KilledSince = Callable[[RoutePlan, str], Aborted | None]


def _never(plan: RoutePlan, version: str) -> Aborted | None:
    return None


def _going() -> bool:
    return False


async def send(upstreams: Upstreams, loop: asyncio.AbstractEventLoop, tap: Tap, target: Target,
               sh: ShadowConfig, handles: set[Handle], killed_since: KilledSince = _never,
               stopped: Callable[[], bool] = _going) -> tuple[Answer, float]:
    """One copy to `target` through the copies' own pools (`upstreams`); its assembled answer
    and how long it took (on `loop`'s clock). Raises gateway.errors.Upstream* or TooLarge.
    The copy is in `handles` (the process's in-flight set) while it is under way: a kill
    with abort_inflight that covers `target` cuts it (`Aborted`) as it cuts a request; one
    without, applied before the copy has its connection (`killed_since`), stops it there;
    so does a reload that stopped it meanwhile (`stopped`: raises Stopped)."""
    handle = Handle(tap.plan.name)
    handle.version = target.name
    handles.add(handle)
    try:
        return await _send(upstreams, loop, tap, target, sh, handle, killed_since, stopped)
    finally:
        handles.discard(handle)


async def _send(upstreams: Upstreams, loop: asyncio.AbstractEventLoop, tap: Tap,
                target: Target, sh: ShadowConfig, handle: Handle,
                killed_since: KilledSince, stopped: Callable[[], bool]) -> tuple[Answer, float]:
    body = tap.body
    if tap.field is not None and target.model:
        body = rewrite_model(body, tap.field, target.model)
    t = sh.timeouts
    # (the copies' clock: only their backends' bytes move it, and a pooled connection's
    # idle time, `server.backend_idle_timeout`, is read on it; between copies far apart it
    # stood still, and a connection the backend had closed long ago looked fresh)
    upstreams.clock.now = started = loop.time()
    pool = upstreams.pools.get(target.origin) or upstreams.pool(target.origin)
    ex, _ = await pool.acquire(t.connect)
    # killed while it waited for its connection (a shadow with a full accept queue, the
    # usual state of one an operator kills), or since the client's answer: nothing goes out
    why = handle.aborted or killed_since(tap.plan, target.name)
    if why is not None:
        pool.release(ex)
        raise why
    if stopped():  # (a reload while it connected: the shadow removed, moved, sample 0)
        pool.release(ex)
        raise Stopped()
    handle.exchange = ex
    att = None
    try:
        ex.begin(started + t.total, t.idle, tap.method == b"HEAD")
        first = b"%s %s%s HTTP/1.1\r\nhost: %s\r\n" % (tap.method, target.path_bytes,
                                                       tap.raw_target, pool.host_header)
        extra = tap.client + SHADOW_HEADER  # (the client's request's x-forwarded-* lines)
        raw = tap.raw_headers
        if sh.drop_headers and target.name == sh.version:  # (the noise copy: all of them)
            drop = frozenset(h.encode("latin-1") for h in sh.drop_headers)
            raw = [(n, v) for n, v in raw if n.lower() not in drop]
        att, traceparent = _traced(tap, target)
        if traceparent is not None:  # (the client's is dropped: `traced`)
            extra += b"traceparent: %s\r\n" % traceparent
        await ex.send(request_head(first, raw, extra, len(body), traceparent is not None),
                      body)
        await ex.read_head()
        if att is not None:
            att.answered(ex.status)
        parts: list[bytes] = []
        size = 0
        while data := await ex.read():
            size += len(data)
            if size > sh.max_answer_bytes:
                raise TooLarge()
            parts.append(data)
        answer = Answer(ex.status, b"".join(parts), media_type(ex.headers),
                        content_coding(ex.headers))
    except BaseException as exc:
        if att is not None:
            att.failed(failure(exc))
        ex.close()
        ex.release()
        raise
    ex.release()
    if att is not None:
        att.end()
    return answer, loop.time() - started


def _traced(tap: Tap, target: Target) -> tuple[AttemptSpan | None, bytes | None]:
    """The copy's span (a traced request's CLIENT span, a child of the gateway's) and the
    traceparent it carries: never the client's own, whose parent id the primary's request
    (or the gateway's span) already names; two children of one parent read as a retry. An
    untraced request's copy gets a span id of its own in the client's trace, its sampled
    flag kept; none when the client sent no valid traceparent."""
    span = tap.span
    if span is not None:
        att: AttemptSpan = span.copy(tap.plan.name, target.name, target.url,
                                     tap.method.decode("latin-1"))
        return att, att.traceparent
    parent = parse_traceparent(tap.traceparent.decode("latin-1")) if tap.traceparent else None
    if parent is None:
        return None, None
    return None, format_traceparent(parent.trace_id, getrandbits(64) or 1,
                                    parent.sampled).encode()


def failure(exc: BaseException) -> str:
    """The `kind` of a copy that got no answer (a fixed set: a metric label)."""
    if isinstance(exc, Aborted):
        return "killed"
    if isinstance(exc, TooLarge):
        return "answer_too_large"
    if isinstance(exc, Stopped):
        return "stopped"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamOverflow):
        return "overflow"
    if isinstance(exc, UpstreamError) and not exc.delivered:
        return "connect"
    if isinstance(exc, UpstreamClosed):
        return "reset"
    if isinstance(exc, UpstreamProtocolError):
        return "malformed"
    return "error"
