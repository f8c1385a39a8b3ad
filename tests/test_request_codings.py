"""Transfer codings other than chunked in a request, end to end: refused with 400, never
forwarded de-chunked as if the bytes were not coded. (From a hostile review.)"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.rawhttp import exchange

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate, chunked", b"x-made-up, chunked"])
async def test_a_transfer_coding_other_than_chunked_is_not_forwarded_as_identity(
        tmp_path: Path, backends, coding: bytes) -> None:
    """`Transfer-Encoding: gzip, chunked` (llhttp accepts any codings before a final
    `chunked`): the gateway de-chunks, drops the field (hop-by-hop) and sends the still
    gzip-coded bytes as `content-length` identity data, with nothing telling the backend
    they are coded: the body the backend reads is not the one the client sent (RELIABILITY
    row 28: "400, or normalised and re-framed"; accepted-and-forwarded-raw = 0). nginx
    answers 501 to a transfer coding it does not implement; expected here 400 (or 501), or
    the body decoded."""
    rec = Recorder()
    port = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    plain = json.dumps({"inputs": [1, 2, 3]}).encode()
    coded = gzip.compress(plain)
    payload = (b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Transfer-Encoding: " + coding + b"\r\n\r\n"
               + b"%x\r\n" % len(coded) + coded + b"\r\n0\r\n\r\n")
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(int(g.url.rsplit(":", 1)[1]), payload)
    if status in (400, 501):
        return
    got = json.loads(body)
    assert got["body"].encode() == plain or "content-encoding" in {
        k.lower() for k, _ in got["headers"]}, (
        f"answered {status}; the backend got {len(coded)} coded bytes as its body with "
        f"headers {got['headers']}")
