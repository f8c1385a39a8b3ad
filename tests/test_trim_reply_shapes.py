"""The audit trim's pin read (redispin._AFTER), its fresh read (redistrim._FRESH) and the
idempotency claim's replace (redisidem._REPLACE), each answered with another shape than
redis gives (a proxy between that mangles replies, a server that speaks RESP but is not
redis): StoreUnavailable in odd_reply's words (a 503 at the admin API), never a
UnicodeDecodeError/ValueError out of reading it (a 500, a traceback), and nothing changed.

A stream entry's id is "<ms>-<seq>" from any redis; before, `entries` took any string for
one, and a non-UTF-8 id (the pin read's, the fresh read's first id) raised
UnicodeDecodeError out of the trim: POST /v1/audit/trim answered 500. Loopback servers
throughout: tests/conftest's odd server, and test_resp_shapes_side's relay to a real
redis-server, here also rewriting one part of a genuine answer.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import hiredis
import pytest

from gateway.errors import StoreUnavailable
from gateway.state import redistrim
from gateway.state.redis import RedisStore
from gateway.state.redisidem import _REPLACE
from gateway.state.redislink import Script
from gateway.state.redispin import _AFTER
from tests.conftest import OddServer, RedisServer, _read_reply
from tests.staterig import state_keys
from tests.test_audit import H
from tests.test_audit_retention import _fill
from tests.test_resp_shapes_side import Relay, _by_script, _gateway, _no_traceback, _only

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def relay(redis_server: RedisServer) -> AsyncIterator[Relay]:
    r = Relay(redis_server.port)
    await r.start()
    yield r
    await r.close()


def _resp(v: Any) -> bytes:
    """`v` (hiredis's reading of a reply) as RESP2 again."""
    if v is None:
        return b"$-1\r\n"
    if type(v) is int:
        return b":%d\r\n" % v
    if type(v) is bytes:
        return b"$%d\r\n%s\r\n" % (len(v), v)
    assert type(v) is list, v
    return b"*%d\r\n" % len(v) + b"".join(_resp(x) for x in v)


def _rewritten(port: int, script: Script,
               change: Callable[[Any], Any]) -> Callable[[list[bytes]], bytes | None]:
    """The relay's mangle: `script`'s genuine answer (asked of the redis-server at `port`
    on a connection of its own) changed by `change`; any other command sent on."""
    def mangle(cmd: list[bytes]) -> bytes | None:
        if bytes(cmd[0]).upper() not in (b"EVALSHA", b"EVAL") or bytes(cmd[1]) not in (
                script.sha.encode(), script.text.encode()):
            return None
        with socket.create_connection(("127.0.0.1", port), 5) as up:
            up.sendall(_resp([b"EVAL", script.text.encode(), *cmd[2:]]))
            reader = hiredis.Reader()
            reader.feed(_read_reply(up))
            return _resp(change(reader.gets()))
    return mangle


# ---------------------------------------------------------------- the pin read (_AFTER)

#: a checkpoint MAC'd under a key no longer held (its key id unknown): the trim reads the
#: chain after it (_pin)
CK = [[b"5-0", [b"e", json.dumps({"action": "audit.trim", "kid": "gone", "hash": "h",
                                   "prev_hash": "p"}).encode()]]]
PIN_ODD = {"ok-string": b"+OK\r\n", "integer": b":1\r\n",
           "not-entries": b"*1\r\n$1\r\nx\r\n",
           "id-not-utf8": b"*1\r\n*2\r\n$4\r\n\xff\xfe-0\r\n*2\r\n$1\r\ne\r\n$2\r\n{}\r\n",
           "id-not-an-id": b"*1\r\n*2\r\n$3\r\nabc\r\n*2\r\n$1\r\ne\r\n$2\r\n{}\r\n"}


@pytest.mark.parametrize("reply", PIN_ODD.values(), ids=PIN_ODD.keys())
async def test_the_trims_pin_read_answered_oddly_says_so(odd_server: OddServer,
                                                         reply: bytes) -> None:
    store = RedisStore(await odd_server({b"EVALSHA": _by_script({_AFTER: reply})}), "kgodd",
                       1.0, keys=state_keys())
    try:
        with pytest.raises(StoreUnavailable, match="the trim's pin read with"):
            await store._pin(CK, await store._conn("audit"))
    finally:
        await store.close()


# ---------------------------------------------------------------- the fresh read (_FRESH)

def _first_id(value: bytes) -> Callable[[Any], Any]:
    def change(reply: Any) -> Any:
        return [reply[0], reply[1], value]
    return change


FRESH_ODD: dict[str, Callable[[Any], Any]] = {
    "ok-string": lambda reply: b"OK",
    "short": lambda reply: reply[:2],
    "count-text": lambda reply: [reply[0], b"9", reply[2]],
    "doc-integer": lambda reply: [1, reply[1], reply[2]],
    "first-id-not-utf8": _first_id(b"\xff\xfe-0"),
    "first-id-not-an-id": _first_id(b"abc"),
}


@pytest.mark.parametrize("change", FRESH_ODD.values(), ids=FRESH_ODD.keys())
async def test_the_trims_fresh_read_answered_oddly_is_a_503_and_changes_nothing(
        tmp_path: Path, backends: Any, session: Any, relay: Relay, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture, change: Callable[[Any], Any]) -> None:
    async with _gateway(tmp_path, backends, relay) as g:
        store = g.gw.sync.store
        await _fill(g, 108 - len(await store.audit_events()))
        before = await store.audit_events()
        relay.mangle = _rewritten(redis_server.port, redistrim._FRESH, change)
        caplog.clear()
        async with session.post(g.admin + "/v1/audit/trim", json={"reason": "cut"},
                                headers=H) as r:
            answer = await r.json(content_type=None)
        relay.mangle = lambda cmd: None
        assert relay.mangled >= 1  # (the trim came as far as its fresh read)
        assert r.status == 503, answer
        assert answer["error"]["type"] == "state_store_unavailable", answer
        assert "redis answered the trim's fresh read with" in answer["error"]["message"] \
            or "redis answered the state read with" in answer["error"]["message"], answer
        assert await store.audit_events() == before  # (nothing trimmed)
        _no_traceback(caplog)


# ---------------------------------------------------------------- the claim's replace

REPLACE_ODD = {"ok-string": b"+OK\r\n", "zero": b":0\r\n", "nil": b"$-1\r\n",
               "array": b"*1\r\n:1\r\n"}


@pytest.mark.parametrize("reply", REPLACE_ODD.values(), ids=REPLACE_ODD.keys())
async def test_a_claims_replace_answered_oddly_says_so_and_changes_nothing(
        relay: Relay, redis_server: RedisServer, reply: bytes) -> None:
    """A record the claim cannot open (here: bytes nobody signed) is replaced by _REPLACE;
    its answer mangled, the claim is not taken for made (a write with the key would run
    with nobody holding it), and the record stays as it was."""
    store = RedisStore(relay.url, "kgodd", 1.0, keys=state_keys())
    k = f"{store.k_idem}:k"
    with socket.create_connection(("127.0.0.1", redis_server.port), 5) as s:
        s.sendall(_resp([b"SET", k.encode(), b"junk"]))
        assert _read_reply(s) == b"+OK\r\n"
    relay.mangle = _only(_REPLACE, reply)
    try:
        with pytest.raises(StoreUnavailable, match="the idempotency replace with"):
            await store.idem_claim("k", {"holder": "h"}, 10.0)
        relay.mangle = lambda cmd: None
        assert await store._call("GET", k) == b"junk"  # (never sent on: unchanged)
        assert await store.idem_claim("k", {"holder": "h"}, 10.0) is None  # (as redis)
        assert await store.idem_claim("k", {"holder": "i"}, 10.0) == {"holder": "h"}
    finally:
        await store.close()
