"""parsing.py: whether a request keeps its connection alive. llhttp is asked only for a head
that is not HTTP/1.1 or that has a `Connection` or `Proxy-Connection` field (llhttp reads
the `close` of either); any other HTTP/1.1 head is kept alive without the call (RESULTS
§45), and every head gets the answer llhttp gives, but that a `close` token always closes
(llhttp keeps an HTTP/1.0 `keep-alive, close` alive: tests/test_connection_close_token.py)."""

from __future__ import annotations

import httptools
import pytest

from gateway.dataplane.protocol import Limits
from tests.test_protocol import Recorder, connect

pytestmark = pytest.mark.timeout(30)

_LIMITS = Limits(header_timeout=5, keepalive_timeout=5, body_timeout=5, send_timeout=5)
_FIELDS = [b"", b"Connection: close\r\n", b"connection: CLOSE\r\n",
           b"Proxy-Connection: close\r\n", b"PROXY-CONNECTION: close\r\n",
           b"proxy-connection: keep-alive, close\r\n", b"Proxy-Connection: keep-alive\r\n",
           b"Connection: keep-alive\r\n", b"Keep-Alive: timeout=5\r\n",
           b"X-Connection: close\r\n", b"Via: 1.1 a\r\n"]


class _Asks:
    """llhttp's own answer for a head (its parser alone, no callbacks of ours)."""

    def __init__(self, data: bytes) -> None:
        self.keep: bool | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.keep = self.parser.should_keep_alive()


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
async def test_keep_alive_is_llhttps_answer(version: bytes) -> None:
    for field in _FIELDS:
        for before in (b"", b"Accept: */*\r\n"):
            data = (b"GET /a HTTP/" + version + b"\r\nHost: x\r\n" + before + field
                    + b"X-B: close\r\n\r\n")
            h = Recorder()
            proto, _, _ = connect(h, limits=_LIMITS)
            proto.data_received(data)
            assert len(h.seen) == 1, data
            assert h.seen[0].refused is None, data
            # (llhttp's answer, but a `close` token closes: on HTTP/1.0 llhttp keeps
            # `keep-alive, close` alive; RFC 9112 9.6)
            closes = b"close" in field.lower() and not field.startswith(b"X-")
            assert h.seen[0].keep_alive is (bool(_Asks(data).keep) and not closes), data
    assert _Asks(b"GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n").keep is False
