"""dataplane/shadowtap.py without sockets: the media type a copy's answer is compared as."""

from __future__ import annotations

import pytest

from gateway.dataplane.shadowtap import media_type


@pytest.mark.parametrize(("raw", "expected"), [
    ([], ""),
    ([(b"X-A", b"1")], ""),
    ([(b"Content-Type", b"application/json")], "application/json"),
    ([(b"content-type", b" Application/JSON ; charset=utf-8")], "application/json"),
    ([(b"CONTENT-TYPE", b"text/event-stream"), (b"Content-Type", b"text/plain")],
     "text/event-stream"),  # the first one
])
def test_media_type(raw: list[tuple[bytes, bytes]], expected: str) -> None:
    assert media_type(raw) == expected
