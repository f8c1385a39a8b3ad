"""Request bodies with a Content-Encoding on the admin API (admin/inputs.py): decoded only
when a handler reads them (after the token check), and never beyond admin.max_body_size.

aiohttp decoded every request body as it arrived, read or not: a POST without a token
carrying 1 MB of gzip (1 GiB of zeros) was answered 401 at once, and then decoded whole
while the unread body was drained, about a second of the event loop the data plane and
kills run on for each megabyte sent."""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib
from pathlib import Path

from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import bearer, serving_process, two_versions
from tests.rawhttp import error_type, exchange, request


def _bomb(mib: int) -> bytes:
    """gzip of `mib` MiB of zeros (about 1 KiB each), one gzip member. Each MiB's deflate
    blocks end in a full flush, which resets the compressor: the same bytes for every MiB,
    made once (deflating 1 GiB took this test 8-23 s; this, the CRC's ~0.3 s)."""
    zeros = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)  # (raw deflate: the gzip framing is ours)
    one = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + one * mib + c.flush()
            + crc.to_bytes(4, "little") + ((mib << 20) & 0xFFFFFFFF).to_bytes(4, "little"))


def test_the_bomb_is_one_gzip_member_of_that_many_zeros() -> None:
    bomb = _bomb(3)
    assert gzip.decompress(bomb) == bytes(3 << 20)
    d = zlib.decompressobj(31)
    assert d.decompress(bomb) == bytes(3 << 20) and d.eof and d.unused_data == b""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_a_compressed_body_without_a_token_is_never_decoded(tmp_path: Path, backends,
                                                                  gateway_procs) -> None:
    p = await backends(echo_app("v1"))
    gw, _ = await serving_process(gateway_procs, tmp_path, two_versions(p, p))
    bomb = await asyncio.to_thread(_bomb, 1024)
    before = _cpu_s(gw.proc.pid)
    r, w = await asyncio.open_connection("127.0.0.1", gw.admin_port)
    w.write(request("POST", "/v1/kill", bomb, {"Content-Encoding": "gzip"}))
    answer = await asyncio.wait_for(r.read(), 20)  # (until the server closes)
    w.close()
    assert answer.startswith(b"HTTP/1.1 401 ") and b"invalid_token" in answer, answer
    spent = _cpu_s(gw.proc.pid) - before
    assert spent < 0.3, f"{spent:.2f}s of CPU for a body nobody reads"

    # with a token: a gzip body is read as before, and one that decodes past the size
    # limit is refused without decoding the rest
    tok = bearer("killgate:kill", "oncall")
    status, _, body = await exchange(gw.admin_port, request(
        "POST", "/v1/kill", _bomb(64), {**tok, "Content-Encoding": "gzip"}), timeout=20)
    assert status == 413 and error_type(body) == "body_too_large", body
    async with ClientSession() as s:
        async with s.get(gw.admin + "/v1/status", headers=bearer("killgate:read")) as r:
            assert (await r.json())["kills"] == []
        async with s.post(gw.admin + "/v1/kill", headers={
                **tok, "Content-Type": "application/json", "Content-Encoding": "gzip"},
                data=gzip.compress(b'{"scope": "global", "reason": "gzip"}')) as r:
            assert r.status == 200, await r.text()
    assert gw.stop() == 0
