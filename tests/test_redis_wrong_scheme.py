"""A redis URL whose scheme is not what the server speaks, said as such (found by review): a
`rediss://` URL at a plain-text redis logged "did not answer in time" (redis waits for the
end of what reads to it as an inline command: our TLS hello), a `redis://` URL at a TLS port
"is unreachable: the redis connection closed". Real redis-servers, plain and TLS-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import StoreUnavailable
from gateway.state.redislink import RedisLink
from gateway.state.signing import Keyring
from tests.conftest import RedisServer, free_port
from tests.test_state_urls import _certs, _redis

pytestmark = pytest.mark.timeout(30)


async def _refusal(url: str, timeout: float = 0.5) -> str:
    link = RedisLink(url, "kgscheme", timeout, keys=Keyring(None))
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await link._call("PING")
    finally:
        await link._close_conns()
    return str(caught.value)


async def test_rediss_at_a_plain_text_redis_says_it_is_plain_text(
        redis_server: RedisServer) -> None:
    said = await _refusal(f"rediss://127.0.0.1:{redis_server.port}/0")
    assert said == (f"the store at 127.0.0.1:{redis_server.port} did not answer TLS: it "
                    "answers plain-text redis; turn TLS on there (tls-port), or use redis:// "
                    "(not rediss://) only on a network trusted with its password in clear"), said
    assert "in time" not in said
    assert redis_server.cmd("PING") == "PONG"  # (and redis:// there works)
    link = RedisLink(redis_server.url, "kgscheme", 1.0, keys=Keyring(None))
    assert await link._call("PING") == b"PONG"
    await link._close_conns()


async def test_redis_at_a_tls_port_says_it_answers_tls(tmp_path: Path) -> None:
    cert, key, ca = _certs(tmp_path)
    port = free_port()
    server = _redis(["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                     "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                     "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                     "--save", "", "--appendonly", "no"], port, tls=True)
    try:
        said = await _refusal(f"redis://127.0.0.1:{port}/0")
        assert said == (f"the store at 127.0.0.1:{port} closed the connection at the first "
                        "command and answers TLS: use rediss:// (not redis://)"), said
    finally:
        server.terminate()
        server.wait(10)


async def test_a_redis_that_does_not_answer_still_says_so(redis_server: RedisServer) -> None:
    """The probes name the other scheme only when the server answers in it: a frozen redis
    (rediss:// or redis://) did not answer in time; nothing listening is unreachable."""
    redis_server.freeze()
    try:
        for url in (f"rediss://127.0.0.1:{redis_server.port}/0", redis_server.url):
            said = await _refusal(url, 0.3)
            assert said == f"redis at 127.0.0.1:{redis_server.port} did not answer in time", said
    finally:
        redis_server.thaw()
    said = await _refusal(f"redis://127.0.0.1:{free_port()}/0")
    assert "is unreachable" in said and "TLS" not in said, said
