"""dataplane/exchange.py and answerparsing.py: an answer is proxied only when each of its
heads is HTTP/1.1 or 1.0. llhttp parses "RTSP/x.y" and "ICE/x.y" status lines as HTTP of the
same numbers and takes versions 0.9, 1.0, 1.1 and 2.0 of each, saying nothing of the
protocol. The answer's first read is tested by bytes 0, 5 and 9 alone (an "H", a "1", a
status that is not 1xx: RESULTS, impperf7), the rest by the heads' bytes kept: every
protocol and version llhttp takes, first or behind 1xx heads (or as one), after an empty
line, however the reads are cut, is refused unless it is HTTP/1.1 or 1.0."""

from __future__ import annotations

import httptools
import pytest

from gateway.errors import UpstreamProtocolError
from tests.test_upstream import exchange, feed, read_all

pytestmark = pytest.mark.timeout(60)

_FINAL = b" 200 OK\r\nContent-Length: 1\r\n\r\nx"
_LINES = [p + b"/%d.%d" % (m, n) for p in (b"HTTP", b"RTSP", b"ICE")
          for m in range(10) for n in range(10)]
_HTTP = (b"HTTP/1.1", b"HTTP/1.0")


class _Head:
    def on_headers_complete(self) -> None:
        pass


def _taken(line: bytes) -> bool:
    """Whether llhttp parses an answer beginning `line` (else it refuses it itself)."""
    try:
        httptools.HttpResponseParser(_Head()).feed_data(line + _FINAL)
    except httptools.HttpParserError:
        return False
    return True


def test_llhttp_takes_only_versions_0_9_1_0_1_1_and_2_0_of_each_protocol() -> None:
    """What the first read's test leans on: a "1" at byte 5 after "HTTP/" is 1.0 or 1.1
    (byte 7 is not read), and two spaces before the status are refused (byte 9 is its
    first digit). Fails if an httptools upgrade makes llhttp take more."""
    taken = [line for line in _LINES if _taken(line)]
    assert taken == [p + v for p in (b"HTTP", b"RTSP", b"ICE")
                     for v in (b"/0.9", b"/1.0", b"/1.1", b"/2.0")]
    assert not _taken(b"HTTP/1.1 ")  # ("HTTP/1.1  200": a second space)


@pytest.mark.parametrize("step", [0, 1, 5, 9, 10])
async def test_only_http_1_1_and_1_0_answers_pass_first_or_behind_1xx_heads(step: int) -> None:
    for line in _LINES:
        if not _taken(line):
            continue
        ok = line in _HTTP
        for lead in (b"", b"\r\n"):
            for before in (b"", b"HTTP/1.1 100 Continue\r\n\r\n",
                           b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\r\n"):
                ex, _ = exchange()
                await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
                feed(ex, lead + before + line + _FINAL, step)
                if ok:
                    await ex.read_head()
                    assert ex.status == 200 and await read_all(ex) == b"x", (line, before)
                    assert ex.heads_read is None  # (dropped at the final head)
                else:
                    with pytest.raises(UpstreamProtocolError):
                        await ex.read_head()
            # a 1xx head of this protocol and version before an HTTP/1.1 answer (llhttp
            # refuses what follows an HTTP/1.0 one: "Data after `Connection: close`")
            ex, _ = exchange()
            await ex.send(b"GET / HTTP/1.1\r\n\r\n", None)
            feed(ex, lead + line + b" 100 Continue\r\n\r\nHTTP/1.1" + _FINAL, step)
            if line == b"HTTP/1.1":
                await ex.read_head()
                assert ex.status == 200 and await read_all(ex) == b"x", line
            else:
                with pytest.raises(UpstreamProtocolError):
                    await ex.read_head()
