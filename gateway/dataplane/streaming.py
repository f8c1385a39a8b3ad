"""Forwarding an answer that is not complete yet: chunked or sized, HEAD, HTTP/1.0, SSE cut
on event boundaries, flow control toward the client, the shadow tap fed as sent. A stream
never ends like a success when it failed (SSE: a final `killgate.error` event, else an
aborted connection). Part of `flight.Flight`, which hands itself in (a `ports.Forwarding`).
"""

from __future__ import annotations

import asyncio
import json

from gateway.dataplane.exchange import Exchange
from gateway.dataplane.headers import content_type, is_event_stream, response_head
from gateway.dataplane.inflight import SHUTDOWN, Aborted
from gateway.dataplane.ports import Forwarding
from gateway.dataplane.request import ClientGone
from gateway.dataplane.sse import EventCutter
from gateway.errors import UpstreamError

__all__ = ["stream"]


def _sse_error(type_: str, route: str, version: str | None) -> bytes:
    data = json.dumps({"type": type_, "route": route, "version": version})
    return f"event: killgate.error\ndata: {data}\n\n".encode()


def _encoded(raw: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body has a Content-Encoding (gzip, br, ...): its bytes are not events."""
    for name, value in raw:
        if len(name) == 16 and name.lower() == b"content-encoding" \
                and value.strip().lower() not in (b"", b"identity"):
            return True
    return False


async def stream(flight: Forwarding, ex: Exchange) -> None:
    """Forward an answer that is not complete yet, chunk by chunk."""
    proxy = flight.proxy
    req = flight.req
    plan, target = flight.plan, flight.target
    if flight.aborted is not None:  # killed before a byte of it went out: answered as killed
        flight.exchange = None
        ex.close()
        ex.release()
        flight._answer_killed(flight.aborted)
        return
    flight.exchange = ex
    status = ex.status
    raw = ex.headers
    head_only = req.method == b"HEAD" or status in (204, 304)
    sse = not head_only and is_event_stream(content_type(raw))
    keep = req.will_keep_alive()
    length = ex.length if not sse else None
    chunked = not head_only and length is None and not req.http10
    if not head_only and length is None and req.http10:
        keep = False  # the body ends with the connection
    if not keep:  # (its body still arriving, say): the head says `close`, and so it is, even
        req.keep_alive = False  # if the body is in by the end (RFC 9112 §9.6)
    connection = (None if keep and not req.http10 else b"keep-alive" if keep else b"close")
    proxy.served(req, plan, target, flight.decision, status)
    if plan.aware and 200 <= status < 300:
        proxy.note_served(target, flight.asked_model())  # (it holds it)
    if proxy.unready:  # served here after "not ready" elsewhere: those count now, not when
        proxy.settle_unready(req)  # a long stream ends
    rec = req.rec
    rec.upstream = ex.head_at - flight.started
    req.start(response_head(status, raw, proxy.labels(plan, target, flight.decision),
                            length if not head_only or req.method == b"HEAD" else None,
                            connection, chunked,
                            # streamed, chunked or (HTTP/1.0: nginx's default to what it
                            # proxies) ended by the close: marked not to be buffered either way
                            sse or (not head_only and length is None)), chunked)
    if head_only:
        flight.exchange = None
        ex.release()
        req.end()
        flight._finished()
        return
    # Whole events only, so that a final `killgate.error` event never lands inside one; a
    # compressed stream has no events to find (cut there, it would be held back whole, and
    # an event of ours would corrupt it): it is forwarded as it comes, and aborted on failure
    cutter = EventCutter() if sse and not _encoded(raw) else None
    tap = proxy.tap(flight) if plan.shadow_config is not None else None
    try:
        while True:
            data = await ex.read()
            if not data:
                break
            if tap is not None:
                tap.feed(data)  # as the backend sent it
            if cutter is not None:
                data = cutter.feed(data)
                if not data:
                    continue
            if not rec.first_byte:
                rec.first_byte = proxy.clock.now
                if req.span is not None:
                    req.span.first_chunk(data)
            rec.bytes_out += len(data)
            req.send(data)
            if req.conn.write_paused:
                try:  # the route's total deadline holds while the client reads too (one
                    async with asyncio.timeout_at(flight.deadline):  # timer per wait): a
                        await req.drain()  # slow reader must not hold the backend past it
                except TimeoutError:
                    proxy.clock.now = proxy.loop.time()  # (a timer, not bytes: its record)
                    flight._close_ex()  # (the client's delay: not counted against the backend)
                    proxy.metrics.inc("killgate_client_send_timeouts_total")
                    if req.span is not None:
                        req.span.stream_failed("client_timeout")
                    flight._finished()
                    req.abort()  # an incomplete body, never a clean end
                    return
    except UpstreamError as exc:
        proxy.clock.now = proxy.loop.time()  # (a kill or a timer may have cut it: its record)
        flight.exchange = None
        ex.release()
        why: Aborted | None = flight.aborted
        kind = "upstream_failed" if why is None else why.reason  # (killed, shutdown)
        killed = why if why is not None and why.reason != SHUTDOWN else None
        span = req.span
        if span is not None:
            if killed is not None:
                span.event("killgate.kill", {"killgate.kill.scope": killed.scope,
                                             "killgate.version": target.name,
                                             "killgate.inflight": 1})
            span.stream_failed(kind)
        if killed is not None:
            proxy.metrics.inc("killgate_inflight_aborted_total", (plan.name,),
                              label_names=("route",))
        elif why is None:
            proxy.count_error(plan, target, exc, flight.started)
        flight._finished()
        if cutter is not None and not cutter.mid_event:
            req.keep_alive = False  # the final event, then the connection closes (CONTRACT §3)
            req.end(_sse_error(kind, plan.name, target.name))
        else:
            req.abort()  # the client sees an incomplete body, never a clean end
        return
    except (ClientGone, asyncio.CancelledError):
        flight._close_ex()
        flight._finished()
        return
    flight.exchange = None
    ex.release()
    proxy.observed(plan, target, status, flight.started, flight.decision, flight.counted)
    flight._finished()
    tail = cutter.flush() if cutter is not None else b""
    rec.bytes_out += len(tail)
    req.end(tail)
    if tap is not None:
        tap.end(status, raw)
