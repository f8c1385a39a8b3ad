"""dataplane/protocol.py and parsing.py: a request's HTTP version, read from the request
line of the read that line began (no parser call: its answer formats a string, RESULTS
§39), is the one the parser reads, however the line arrives: after empty lines (which
llhttp skips), split at any byte, pipelined behind another request, or followed by fields
whose values end in " HTTP/1.1"."""

from __future__ import annotations

import random

import pytest

from gateway.dataplane.protocol import Limits
from tests.test_protocol import Recorder, connect

pytestmark = pytest.mark.timeout(30)

_LIMITS = Limits(header_timeout=5, keepalive_timeout=5, body_timeout=5, send_timeout=5)
_TARGETS = [b"/", b"/a", b"/HTTP/1.1", b"/x?q=HTTP/1.0", b"http://h/p", b"/" + b"1" * 40]


def _head(method: bytes, target: bytes, version: bytes) -> bytes:
    return (method + b" " + target + b" HTTP/" + version + b"\r\nHost: x\r\n"
            b"X-A: y HTTP/1.1\r\nX-B: HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
async def test_the_version_is_the_parsers_after_empty_lines_and_split_anywhere(
        version: bytes) -> None:
    rng = random.Random(version)
    for target in _TARGETS:
        for lead_n in range(0, 13):  # (0 to 12 skipped bytes: any shift of the line)
            lead = bytes(rng.choice(b"\r\n") for _ in range(lead_n))
            data = lead + _head(rng.choice([b"GET", b"POST", b"OPTIONS"]), target, version)
            for cut in [0, *sorted(rng.sample(range(1, len(data)), 6))]:
                h = Recorder()
                proto, _, _ = connect(h, limits=_LIMITS)
                if cut:
                    proto.data_received(data[:cut])
                proto.data_received(data[cut:])
                assert len(h.seen) == 1, (data, cut)  # (answered within the read)
                req = h.seen[0]
                assert req.refused is None and req.target == target, (data, cut)
                assert req.http10 is (version == b"1.0"), (data, cut)
                assert proto.first_read is None  # (taken by the head it began)


async def test_a_pipelined_request_after_the_first_of_a_read_asks_the_parser() -> None:
    """Only the read's first request line is read from the read: the second's head is
    another's, at another offset (an HTTP/1.0 one behind an HTTP/1.1 one and the reverse)."""
    for first, second in ((b"1.1", b"1.0"), (b"1.0", b"1.1"), (b"1.0", b"1.0")):
        h = Recorder()
        proto, _, _ = connect(h, limits=_LIMITS)
        a = _head(b"GET", b"/a", first).replace(b"\r\n\r\n",
                                                 b"\r\nConnection: keep-alive\r\n\r\n")
        b = _head(b"GET", b"/HTTP/1.1", second)
        proto.data_received(a + b)
        assert len(h.seen) == 2
        assert [r.http10 for r in h.seen] == [first == b"1.0", second == b"1.0"]
