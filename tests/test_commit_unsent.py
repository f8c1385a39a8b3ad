"""A commit whose connection closed as it was made, before the commit could be sent on it, is
StoreUnavailable (nothing was sent, nothing changed), not StoreOutcomeUnknown.

Callers that need a connection while it connects share that connect (redislink.py `_conn`);
a connection the server closed right after its handshake (a redis restarting or killing
clients, a proxy or a balancer at its connection limit) was closed by the time the caller
resumed, and `send` refusing it read as a reset "once the command is on its way": the
commit never written was answered 503 outcome_unknown, "it may be in force". A loopback
server that takes the handshake and closes the connection with its last reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreOutcomeUnknown, StoreUnavailable
from gateway.state.redis import RedisStore
from tests.staterig import state_keys

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def closes_after_handshake() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server's port that closes each connection with its answer to CLIENT SETNAME, and
    what each connection sent it."""
    sent: list[bytes] = []
    handlers: set[asyncio.Task[Any]] = set()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        handlers.add(cast("asyncio.Task[Any]", asyncio.current_task()))
        data = b""
        try:
            while b"SETNAME" not in data and (chunk := await r.read(4096)):
                data += chunk
            w.write(b"+OK\r\n")
            w.close()
            data += await r.read()  # (anything sent after: none can be)
        except OSError:
            pass
        finally:
            sent.append(data)
            w.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], sent
    server.close()
    await server.wait_closed()
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


async def test_a_commit_on_a_connection_closed_as_it_was_made_changed_nothing(
        closes_after_handshake: tuple[int, list[bytes]]) -> None:
    port, sent = closes_after_handshake
    store = RedisStore(f"redis://127.0.0.1:{port}/0", "kgunsent", 1.0, keys=state_keys())
    try:
        with pytest.raises(StoreUnavailable, match="nothing was sent") as got:
            await store.commit(None, StateDoc(generation=1), AuditDraft("ops", "kill", {}, "x"))
        assert not isinstance(got.value, StoreOutcomeUnknown)  # (before: outcome unknown)
    finally:
        await store.close()
    assert sent and not any(b"EVAL" in s for s in sent)  # (it was indeed never sent)
