"""The side stores when the server at state.url answers with a reply of another shape than
redis gives (a proxy between that rewrites or mangles replies, a server that speaks RESP
but is not redis): the heartbeat, its TIME, the fleet read and the seeding of places; the
idempotency claim, swap and set; the audit trim's reads and its script. Each says so
(StoreUnavailable, in odd_reply's words; the trim script's StoreOutcomeUnknown), never a
traceback, never an answer taken for a change made (state/replyshape.py).

Before: a heartbeat answered `+OK` was taken as written; TIME's `+OK` placed this
process's start at 79 s after the epoch; the fleet read, the claim answered an integer,
the trim's reads raised ValueError/TypeError (a 500, a `state_sync_error` traceback); a
swap answered `+OK` was a swap made; the trim script's `+OK` was retried 8 times, then "the
trail or the state changed while it was read". Loopback servers throughout: the
tests/test_resp_shapes.py one, and a relay to a real redis-server that mangles one
script's answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import hiredis
import pytest

from gateway.errors import StoreUnavailable
from gateway.state import redistrim, trailscan
from gateway.state.fleetscan import LIVE
from gateway.state.redis import RedisStore
from gateway.state.redisaux import _HEARTBEAT
from gateway.state.redisidem import _CLAIM, _SWAP
from gateway.state.redislink import Script
from tests.backends import echo_app
from tests.conftest import (
    OddServer,
    RedisServer,
    _read_reply,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.staterig import redis_section, state_keys
from tests.test_audit import H
from tests.test_audit_retention import RETAIN, _fill

pytestmark = pytest.mark.timeout(30)

TIME = b"*2\r\n$10\r\n1796609410\r\n$6\r\n640565\r\n"
ODD = {"ok-string": b"+OK\r\n", "nil": b"$-1\r\n", "zero": b":0\r\n",
       "array": b"*1\r\n:1\r\n"}


def _store(url: str) -> RedisStore:
    return RedisStore(url, "kgodd", 1.0, keys=state_keys())


def _by_script(answers: dict[Script, bytes]) -> Callable[[list[bytes]], bytes]:
    """An EVALSHA / EVAL answer by the script run (NOSCRIPT for any other: not asked)."""
    def answer(cmd: list[bytes]) -> bytes:
        for script, reply in answers.items():
            if bytes(cmd[1]) in (script.sha.encode(), script.text.encode()):
                return reply
        return b"-ERR not this test's script\r\n"
    return answer


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], \
        [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("reply", ODD.values(), ids=ODD.keys())
async def test_a_heartbeat_answered_oddly_is_not_taken_as_written(
        odd_server: OddServer, reply: bytes) -> None:
    url = await odd_server({b"TIME": TIME, b"EVALSHA": _by_script({_HEARTBEAT: reply})})
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable, match=r"the heartbeat with .*not a time"):
            await store.heartbeat("gw-1", 1)
    finally:
        await store.close()


@pytest.mark.parametrize("reply", [b"+OK\r\n", b":1\r\n", b"*1\r\n$1\r\n1\r\n",
                                   b"*2\r\n$1\r\nx\r\n$1\r\n1\r\n"],
                         ids=["ok-string", "integer", "short", "not-digits"])
async def test_a_time_answered_oddly_places_no_heartbeat(odd_server: OddServer,
                                                         reply: bytes) -> None:
    url = await odd_server({b"TIME": reply})
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable, match="TIME with"):
            await store.heartbeat("gw-1", 1)
        assert store._boot is None  # (placed by nothing: the next heartbeat asks again)
    finally:
        await store.close()


@pytest.mark.parametrize("reply", [*ODD.values(), b"*4\r\n:1\r\n:1\r\n$1\r\n0\r\n*1\r\n:1\r\n"],
                         ids=[*ODD.keys(), "odd-pairs"])
async def test_a_fleet_read_answered_oddly_says_so(odd_server: OddServer, reply: bytes) -> None:
    url = await odd_server({b"EVALSHA": _by_script({LIVE: reply})})
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable, match="the fleet read with"):
            await store.fleet(2.0)
    finally:
        await store.close()


@pytest.mark.parametrize(("answers", "said"), [
    ({b"HLEN": b"+OK\r\n"}, "HLEN with"),
    ({b"HLEN": b":1\r\n", b"HGETALL": b":1\r\n"}, "HGETALL with"),
    ({b"HLEN": b":1\r\n", b"HGETALL": b"*1\r\n$1\r\nx\r\n"}, "HGETALL with"),
], ids=["hlen", "hgetall-int", "hgetall-odd"])
async def test_the_places_seeded_from_an_odd_answer_say_so(
        odd_server: OddServer, answers: dict[bytes, bytes], said: str) -> None:
    store = _store(await odd_server(answers))
    try:
        with pytest.raises(StoreUnavailable, match=said):
            await store._seed_places()
    finally:
        await store.close()


@pytest.mark.parametrize("reply", [b":1\r\n", b"*1\r\n$1\r\nx\r\n", b":0\r\n"],
                         ids=["integer", "array", "zero"])
async def test_an_idempotency_claim_answered_oddly_says_so(odd_server: OddServer,
                                                           reply: bytes) -> None:
    url = await odd_server({b"EVALSHA": _by_script({_CLAIM: reply})})
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable, match="the idempotency claim with"):
            await store.idem_claim("k", {"holder": "h"}, 10.0)
    finally:
        await store.close()


@pytest.mark.parametrize("reply", [b"+OK\r\n", b":2\r\n", b"$-1\r\n"],
                         ids=["ok-string", "two", "nil"])
async def test_an_idempotency_swap_answered_oddly_is_no_swap_made(odd_server: OddServer,
                                                                  reply: bytes) -> None:
    mine = {"holder": "h"}
    record = _store("redis://127.0.0.1:1/0")._idem_sealed("k", mine, 10.0)  # (genuine)

    def held(cmd: list[bytes]) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(record), record)

    url = await odd_server({b"GET": held, b"EVALSHA": _by_script({_SWAP: reply})})
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable, match="the idempotency swap with"):
            await store.idem_renew("k", mine, 10.0)  # (was True: renewed)
        with pytest.raises(StoreUnavailable, match="the idempotency swap with"):
            await store.idem_settle("k", mine, 10.0)
    finally:
        await store.close()


@pytest.mark.parametrize(("answers", "call"), [
    ({b"SET": b":1\r\n"}, "set"), ({b"GET": b":1\r\n"}, "renew"),
    ({b"DEL": b"+OK\r\n"}, "release"),
], ids=["set", "get", "del"])
async def test_an_idempotency_record_answered_oddly_says_so(
        odd_server: OddServer, answers: dict[bytes, bytes], call: str) -> None:
    store = _store(await odd_server(answers))
    try:
        with pytest.raises(StoreUnavailable, match="redis answered"):
            if call == "set":
                await store.idem_set("k", {"holder": "h"}, 10.0)
            elif call == "renew":
                await store.idem_renew("k", {"holder": "h"}, 10.0)
            else:
                await store.idem_release("k")
    finally:
        await store.close()


#: the trim's reads answered as redis would, but for the one under test (an audit stream
#: of one entry: [id, [e, {}]])
ENTRY = b"*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\ne\r\n$2\r\n{}\r\n"
EXTENT = b"*3\r\n:1\r\n" + ENTRY + b":1796609410000\r\n"
READ = (b"*6\r\n*3\r\n$-1\r\n$-1\r\n:0\r\n:1\r\n" + ENTRY + ENTRY
        + b":0\r\n:1796609410000\r\n")


@pytest.mark.parametrize(("answers", "said"), [
    ({redistrim._EXTENT: b"+OK\r\n"}, "extent read"),
    ({redistrim._EXTENT: b"*3\r\n:1\r\n:1\r\n:1\r\n"}, "extent read"),
    ({redistrim._EXTENT: EXTENT, redistrim._READ: b"*2\r\n:1\r\n:1\r\n"}, "trim's read"),
    ({redistrim._EXTENT: EXTENT, redistrim._READ: READ[:-len(b":1796609410000\r\n")]
      + b"$1\r\nx\r\n"}, "trim's read"),
    ({redistrim._EXTENT: EXTENT, redistrim._READ: READ, trailscan._SCAN: b"+OK\r\n"},
     "trim's scan"),
    ({redistrim._EXTENT: EXTENT, redistrim._READ: READ,
      trailscan._SCAN: b"*3\r\n$0\r\n\r\n:1\r\n*0\r\n"}, "trim's scan"),
], ids=["extent-ok", "extent-ints", "read-short", "read-clock", "scan-ok", "scan-ck"])
async def test_the_trims_reads_answered_oddly_say_so(
        odd_server: OddServer, answers: dict[Script, bytes], said: str) -> None:
    store = _store(await odd_server({b"EVALSHA": _by_script(answers)}))
    try:
        with pytest.raises(StoreUnavailable, match=said):
            await store.audit_trim(lambda window: pytest.fail("decided"),
                                   lambda count, oldest, clock: True)
    finally:
        await store.close()


class Relay:
    """127.0.0.1:<port> → a real redis-server, one command at a time, but for the
    commands `mangle` answers itself (never sent on)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.mangle: Callable[[list[bytes]], bytes | None] = lambda cmd: None
        self.mangled = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._tasks.add(cast("asyncio.Task[Any]", asyncio.current_task()))
        reader = hiredis.Reader()
        up = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", self.target), 5)
        try:
            while chunk := await r.read(65536):
                reader.feed(chunk)
                while (cmd := reader.gets()) is not False:
                    answer = self.mangle(cmd)
                    if answer is not None:
                        self.mangled += 1
                    else:
                        raw = b"*%d\r\n" % len(cmd) + b"".join(
                            b"$%d\r\n%s\r\n" % (len(a), a) for a in cmd)
                        answer = await asyncio.to_thread(self._roundtrip, up, raw)
                    w.write(answer)
        except (OSError, hiredis.ProtocolError):
            pass
        finally:
            up.close()
            w.transport.abort()

    @staticmethod
    def _roundtrip(up: socket.socket, raw: bytes) -> bytes:
        up.sendall(raw)
        return _read_reply(up)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def relay(redis_server: RedisServer) -> AsyncIterator[Relay]:
    r = Relay(redis_server.port)
    await r.start()
    yield r
    await r.close()


def _only(script: Script, reply: bytes) -> Callable[[list[bytes]], bytes | None]:
    def mangle(cmd: list[bytes]) -> bytes | None:
        if bytes(cmd[0]).upper() in (b"EVALSHA", b"EVAL") and bytes(cmd[1]) in (
                script.sha.encode(), script.text.encode()):
            return reply
        return None
    return mangle


@contextlib.asynccontextmanager
async def _gateway(tmp_path: Path, backends: Any, relay: Relay) -> AsyncIterator[Any]:
    p = await backends(echo_app("v1"))
    state = redis_section(relay.url, "kgtest", f"{tmp_path}/snapshot.json",
                          poll_interval="100ms", heartbeat_interval="200ms",
                          instance_lease="2s", command_timeout="2s") + RETAIN % "1h"
    async with running_gateway(write_config(tmp_path, two_versions(p, p), state=state)) as g:
        yield g


async def test_a_trim_answered_oddly_by_its_script_is_an_unknown_outcome(
        tmp_path: Path, backends: Any, session: Any, relay: Relay,
        caplog: pytest.LogCaptureFixture) -> None:
    async with _gateway(tmp_path, backends, relay) as g:
        store = g.gw.sync.store
        await _fill(g, 108 - len(await store.audit_events()))
        before = await store.audit_events()
        relay.mangle = _only(redistrim._TRIM, b"+OK\r\n")
        caplog.clear()
        async with session.post(g.admin + "/v1/audit/trim", json={"reason": "cut"},
                                headers=H) as r:
            answer = await r.json()
        assert r.status == 503 and answer["error"]["type"] == "outcome_unknown", answer
        assert "the trim with b'OK', not 'ok' or 'moved'" in answer["error"]["message"]
        assert relay.mangled == 1  # (asked once, not 8 times as a store that moved)
        relay.mangle = lambda cmd: None
        assert await store.audit_events() == before  # (never sent on: nothing changed)
        _no_traceback(caplog)


async def test_a_write_whose_claim_is_answered_oddly_changes_nothing(
        tmp_path: Path, backends: Any, session: Any, relay: Relay,
        caplog: pytest.LogCaptureFixture) -> None:
    async with _gateway(tmp_path, backends, relay) as g:
        gen = g.gw.sync.holder.doc.generation
        relay.mangle = _only(_CLAIM, b":1\r\n")
        caplog.clear()
        body = {"scope": "version", "route": "iris", "version": "v1", "reason": "bad"}
        async with session.post(g.admin + "/v1/kill", json=body,
                                headers={**H, "Idempotency-Key": "k1"}) as r:
            answer = await r.json()
        assert r.status == 503 and answer["error"]["type"] == "state_store_unavailable", answer
        assert "the idempotency claim with 1" in answer["error"]["message"], answer
        relay.mangle = lambda cmd: None
        assert (await store_generation(g)) == gen  # (nothing changed)
        _no_traceback(caplog)


async def store_generation(g: Any) -> int:
    return (await g.gw.sync.store.load()).doc.generation


async def test_a_heartbeat_answered_oddly_is_said_by_the_sync_loop(
        tmp_path: Path, backends: Any, relay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    async with _gateway(tmp_path, backends, relay) as g:
        caplog.clear()
        relay.mangle = _only(_HEARTBEAT, b"+OK\r\n")
        await wait_until(lambda: "the heartbeat with b'OK'" in (g.gw.sync.last_error or ""),
                         10, 0.02, what="the sync loop saying the heartbeat's answer")
        relay.mangle = lambda cmd: None
        await wait_until(lambda: g.gw.sync.connected and g.gw.sync.last_error is None, 10,
                         0.02, what="the store answering as redis again")
        _no_traceback(caplog)


async def test_a_fleet_read_answered_oddly_is_said_not_a_500(
        tmp_path: Path, backends: Any, session: Any, relay: Relay,
        caplog: pytest.LogCaptureFixture) -> None:
    async with _gateway(tmp_path, backends, relay) as g:
        caplog.clear()
        relay.mangle = _only(LIVE, b"+OK\r\n")
        async with session.get(g.admin + "/v1/fleet", headers=H) as r:
            answer = await r.json()
        relay.mangle = lambda cmd: None
        assert r.status == 200, answer  # (the fleet's view says what the store did not)
        assert "the fleet read with b'OK'" in answer["fleet_error"], answer
        _no_traceback(caplog)
