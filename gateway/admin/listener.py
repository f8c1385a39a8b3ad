"""The admin listener: aiohttp's application server with the data plane's guards.

Owns what aiohttp does not do for the admin port (RELIABILITY row 53), so that the
process that is also the data plane and the kill switch cannot be exhausted without a
login:
* a request head must be complete within `header_timeout` of its first byte (of the
  connection's start, for the first request), or the connection gets a 408 and is closed;
  idle keep-alive connections close after `keepalive_timeout`; an answer the client takes
  nothing of for `send_timeout` is cut off (the connection is aborted: admin/sendguard.py);
* a request head may hold `MAX_HEAD_BYTES` in all, each line `MAX_FIELD_SIZE` and at
  most `MAX_HEADERS` fields: beyond, a 431 (414 for the request line) and the connection
  is closed. Nothing past the cap is buffered, so a held connection costs a bounded amount;
* beyond `max_connections` open connections, the longest-open connection with no request
  in progress (or whose client takes nothing of its answer, or pipelines requests ahead
  of the answers) is closed to make room for a new one (a new one is closed as soon as
  accepted only when every connection has a request in progress), so that connections
  held without a token cannot lock an operator out;
* parse errors are answered in the API's JSON error shape and logged at debug level
  (a flood of garbage must not flood the log); one inside a chunked body whose head was
  taken ends that body's read at once (400), not at server.body_timeout (408);
* a client that shuts its sending side after its requests (`nc -N`) has those it sent
  whole answered before the connection closes (aiohttp closed at the FIN).
Relies on aiohttp's RequestHandler internals (`_request_count`, `_messages`,
`_request_in_progress`, `_handle_request`, `_paused`): pyproject pins aiohttp below 3.15,
and tests/test_admin_listener.py and tests/test_admin_slots.py check the guards are really
in force.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway.admin.listenerlimits import MAX_HEAD_BYTES, Limits, error_body, head_limit
from gateway.admin.sendguard import SendGuarded
from gateway.errors import ApiError

__all__ = ["MAX_HEAD_BYTES", "AdminRunner", "Limits"]

log = logging.getLogger("killgate.admin")

MAX_FIELD_SIZE = 8190  # one header line (an Authorization header holds a JWT up to ~8 KiB)
MAX_HEADERS = 64


_REFUSED = object()  # in place of a payload: the parser refused the head


class _BodyFramedWrong(ApiError):
    """Set on a body whose chunked framing the parser refused after its head was taken:
    its handler's read raises it (answered 400), instead of waiting for the rest until
    server.body_timeout and answering 408."""

    def __init__(self) -> None:
        super().__init__(400, "bad_request", "the request body's chunked framing is not "
                                             "valid HTTP/1.1: nothing was done")


_REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long",
            431: "Request Header Fields Too Large"}


class _AdminProtocol(SendGuarded):
    __slots__ = ("_kg_deadline", "_kg_fin", "_kg_handled", "_kg_head", "_kg_line_done",
                 "_kg_payload", "_kg_server")
    _kg_server: _AdminServer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._kg_head = 0
        self._kg_line_done = False
        self._kg_payload: Any = None
        self._kg_deadline: asyncio.TimerHandle | None = None
        self._kg_handled = 0  # requests answered (aiohttp's _request_count: heads parsed)
        self._kg_fin = False  # the client shut its sending side: close once all answered
        if self._kg_server.open_connections() > self._kg_limits.max_connections:
            self._kg_limits.on_refused("connections")
            # over the cap: the longest-open idle connection makes room, else refuse fast
            if not self._kg_server.make_room(self):
                cast(asyncio.Transport, transport).abort()
                return
        self._kg_arm()

    def _kg_idle(self) -> bool:
        """Whether closing this connection loses nothing an operator sends: it is open,
        and no request is in progress or queued on it (idle keep-alive, or a head still
        arriving), or its client takes nothing of the answer it asked for, or sent
        requests ahead of the answers (pipelining, which no CLI, console or Alertmanager
        does: a backlog would keep a connection busy for as long as it lasts)."""
        transport = self.transport
        return (transport is not None and not transport.is_closing()
                and (self._paused or self._request_count - self._kg_handled != 1))

    async def _handle_request(self, *args: Any, **kw: Any) -> Any:
        # counted at its end: a head parsed and taken off the queue, whose handler has not
        # begun yet (the next loop turn), is not idle either
        try:
            return await super()._handle_request(*args, **kw)
        finally:
            self._kg_handled += 1
            if self._kg_fin and self._kg_handled >= self._request_count:
                self.close()  # (the last request before the client's FIN answered)

    def eof_received(self) -> bool:  # type: ignore[override]  # (asyncio.Protocol: bool | None)
        """The client shut its sending side (`printf ... | nc -N`, a script's
        shutdown(SHUT_WR)): the requests it sent whole are answered, then the connection
        closes. Closing at the FIN (aiohttp's way) applied a kill and lost its answer. A
        request whose body the FIN cut off cannot be answered in full: closed at once, as
        before, as is a connection with no request to answer."""
        payload = self._kg_payload
        # (the last head parsed is the one whose body may be cut off; the head of one more,
        # begun, is dropped: the requests before it are answered all the same)
        whole = (self._request_count > self._kg_handled
                 and (payload is None or payload is _REFUSED or payload.is_eof()))
        self._kg_fin = whole
        return whole  # (False: the transport closes itself)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), (web.RequestPayloadError, _BodyFramedWrong)):
            # a body that is not what its Content-Encoding says, answered 400 already: the
            # unread rest raises again when aiohttp drains it (closing the connection)
            log.debug("bad admin request body: %s", kw["exc_info"])
            return
        super().log_exception(*args, **kw)

    def _kg_arm(self) -> None:
        self._kg_deadline = self._loop.call_later(self._kg_limits.header_timeout,
                                                  self._kg_expire)

    def _kg_disarm(self) -> None:
        if self._kg_deadline is not None:
            self._kg_deadline.cancel()
            self._kg_deadline = None

    def data_received(self, data: bytes) -> None:
        # bytes that belong to the next request head (not to the last request's body)
        if self._kg_payload is _REFUSED:  # the parser refused this head: it is answered
            super().data_received(data)
            return
        awaiting = self._kg_payload is None or self._kg_payload.is_eof()
        if awaiting:
            if self._kg_head == 0:  # a new head starts
                self._kg_line_done = False
                if self._kg_deadline is None:
                    self._kg_arm()  # a keep-alive connection's next request
            if not self._kg_line_done:  # (tells 414 from 431)
                lf = data.find(b"\n")
                self._kg_line_done = lf >= 0 and self._kg_head + lf <= MAX_FIELD_SIZE + 1
            self._kg_head += len(data)
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # a head was parsed (or refused by the parser)
            self._kg_disarm()
            self._kg_head = 0
            last = self._messages[-1] if self._messages else None
            was, self._kg_payload = self._kg_payload, (
                None if last is None else
                _REFUSED if isinstance(last[0], _ErrInfo) else last[1])
            if self._kg_payload is _REFUSED and not awaiting:
                # (refused inside a body: aiohttp left that body waiting for its end)
                was.set_exception(_BodyFramedWrong())
            return
        if awaiting and self.transport is not None and \
                self._kg_head > self._kg_limits.max_head_bytes:
            self._kg_limits.on_refused("head_size")
            self._kg_refuse(431, "headers_too_large",
                            f"the request head exceeds {self._kg_limits.max_head_bytes} bytes")

    def _kg_refuse(self, status: int, type_: str, message: str) -> None:
        """Answer and close, or only close when a response may be on its way already."""
        self._kg_disarm()
        transport = self.transport
        if transport is None:
            return
        if self._request_in_progress or self._messages:
            transport.abort()
            return
        body = error_body(status, type_, message)
        transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                        % (status, _REASONS[status].encode(), len(body), body))
        self.force_close()  # (closes the transport once the answer is written)

    def _kg_expire(self) -> None:
        self._kg_deadline = None
        if self.transport is not None and not self._request_in_progress and not self._messages:
            self._kg_limits.on_refused("timeout")
            self._kg_refuse(408, "header_timeout", "the request head did not arrive in time")

    def connection_lost(self, exc: BaseException | None) -> None:
        self._kg_disarm()
        super().connection_lost(exc)  # (SendGuarded's: its look cancelled)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Parser refusals and unexpected failures, in the API's error shape."""
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already")
        if isinstance(exc, LineTooLong):
            if self._kg_line_done:
                status, type_, text = 431, "headers_too_large", \
                    f"a header line exceeds {MAX_FIELD_SIZE} bytes"
            else:
                status, type_, text = 414, "uri_too_long", \
                    f"the request line exceeds {MAX_FIELD_SIZE} bytes"
        elif isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
            status, type_, text = 431, "too_many_headers", f"more than {MAX_HEADERS} headers"
        elif status == 500:
            log.error("admin request failed", exc_info=exc)
            type_, text = "internal", "the admin API failed to handle this request"
        else:
            log.debug("bad admin request: %s", exc)
            type_, text = "bad_request", "the request is not valid HTTP/1.1"
        if status in (414, 431):
            self._kg_limits.on_refused("head_size")
        resp = web.Response(status=status, body=error_body(status, type_, text),
                            content_type="application/json")
        resp.force_close()
        return resp


class _AdminServer(web.Server):
    def __init__(self, handler: Any, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits

    def open_connections(self) -> int:
        return len(self._connections)

    def make_room(self, newcomer: _AdminProtocol) -> bool:
        """Close the longest-open idle connection (see `_kg_idle`) for `newcomer`; False
        when every other one has a request in progress. Anyone can hold every slot
        without a token (idle until the header deadline, or kept alive by a /healthz):
        refusing newcomers then locked operators out of the kill switch, while a
        newcomer sends its head at once and so is the last an attacker's new
        connections would reach."""
        for conn in self._connections:
            if conn is not newcomer and isinstance(conn, _AdminProtocol) and conn._kg_idle():
                conn._kg_disarm()
                cast(asyncio.Transport, conn.transport).abort()
                return True
        return False

    def __call__(self) -> RequestHandler:
        proto = _AdminProtocol(self, loop=self._loop, **self._kwargs)
        proto._kg_limits = self.limits
        proto._kg_server = self
        return proto


class AdminRunner(web.AppRunner):
    """`web.AppRunner` whose server is guarded by `limits`."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        # auto_decompress off: a body is decoded by the handler that reads it, after the
        # token check, never as it arrives (admin/inputs.py)
        kwargs.update(keepalive_timeout=limits.keepalive_timeout, max_field_size=MAX_FIELD_SIZE,
                      max_line_size=MAX_FIELD_SIZE, max_headers=MAX_HEADERS,
                      auto_decompress=False)
        if not any(getattr(m, "checks_head", False) for m in app.middlewares):
            # (admin/front.py's middleware checks it itself, first)
            app.middlewares.insert(0, head_limit(limits))  # before anything reads the request
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return _AdminServer(plain.request_handler, limits=self.limits,
                            request_factory=plain.request_factory,
                            handler_cancellation=plain.handler_cancellation,
                            loop=plain._loop, **plain._kwargs)
