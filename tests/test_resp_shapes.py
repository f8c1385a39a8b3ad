"""The commit path when the server at state.url answers a command with a reply of another
shape than redis gives it (a proxy between that rewrites or mangles replies, a server that
speaks RESP but is not redis): the commit, the WAIT for replicas, the load and the poll say
so (StoreOutcomeUnknown for a commit that may have run, StoreUnavailable for the rest),
never a traceback, and never take the answer for a commit made.

Before: a commit answered `+OK` (or any reply whose first element was not 'conflict' /
'audit_conflict') was taken as made (the kill answered 200, nothing stored); one answered
nil raised TypeError; a WAIT answered `+OK`, ValueError out of `replicated` (a committed
kill answered 500 internal, not 503 not_durable); a load or a poll answered `+OK`,
TypeError or AttributeError. A loopback server that takes the handshake and answers the
command under test with the reply given; real sockets throughout."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreOutcomeUnknown, StoreUnavailable
from gateway.state.redis import RedisStore
from gateway.state.resp import connect, parse_endpoint
from tests.staterig import state_keys

pytestmark = pytest.mark.timeout(30)

def _store(url: str) -> RedisStore:
    return RedisStore(url, "kgodd", 1.0, keys=state_keys())


ODD = {"ok-string": b"+OK\r\n", "nil": b"$-1\r\n", "integer": b":1\r\n",
       "empty-array": b"*0\r\n", "array-of-int": b"*2\r\n:1\r\n:0\r\n",
       "unknown-status": b"*2\r\n$4\r\ndone\r\n$0\r\n\r\n"}


@pytest.mark.parametrize("reply", ODD.values(), ids=ODD.keys())
async def test_a_commit_answered_with_another_shape_is_never_taken_as_made(
        odd_server: Any, reply: bytes) -> None:
    url = await odd_server({b"EVALSHA": reply, b"EVAL": reply})
    store = _store(url)
    try:
        with pytest.raises(StoreOutcomeUnknown, match="not the commit script's answer") as got:
            await store.commit(None, StateDoc(generation=1), AuditDraft("ops", "kill", {}, "x"))
        assert got.value.event is not None  # (what a retry answers with, had it landed)
        assert store._committed is None  # (nothing for a WAIT to count)
    finally:
        await store.close()


@pytest.mark.parametrize("reply", [b"+OK\r\n", b"$-1\r\n", b"*1\r\n:1\r\n", b":-1\r\n"],
                         ids=["ok-string", "nil", "array", "negative"])
async def test_a_wait_answered_with_another_shape_confirms_no_replica(
        odd_server: Any, reply: bytes) -> None:
    # (the no-op's fence first, answered as redis would: the node holds the generation)
    url = await odd_server({b"EVALSHA": b":1\r\n", b"WAIT": reply})
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable, match="WAIT"):
            await store.replicated(1, 0.2, 1, fence=True)
    finally:
        await store.close()


@pytest.mark.parametrize("reply", [b"+OK\r\n", b":1\r\n", b"*2\r\n:1\r\n:0\r\n",
                                   b"*5\r\n:1\r\n:2\r\n:0\r\n:0\r\n$-1\r\n"],
                         ids=["ok-string", "integer", "short-array", "wrong-types"])
async def test_a_load_answered_with_another_shape_says_so(odd_server: Any,
                                                          reply: bytes) -> None:
    url = await odd_server({b"EVALSHA": reply, b"EVAL": reply})
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable, match="not the state read's answer"):
            await store.load()
    finally:
        await store.close()


@pytest.mark.parametrize("reply", [b"+OK\r\n", b":1\r\n", b"*2\r\n:1\r\n:0\r\n"],
                         ids=["ok-string", "integer", "array-of-int"])
async def test_a_poll_answered_with_another_shape_says_so(odd_server: Any,
                                                          reply: bytes) -> None:
    url = await odd_server({b"EVALSHA": reply, b"EVAL": reply})
    store = _store(url)
    try:
        with pytest.raises(StoreUnavailable, match="not the poll's answer"):
            await store.poll()
    finally:
        await store.close()


#: a RESP3 push (client tracking's invalidation): out-of-band, nobody's reply
PUSH = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$5\r\nkgodd\r\n"


def _echo_after_a_push(cmd: list[bytes]) -> bytes:
    return PUSH + b"$%d\r\n%s\r\n" % (len(cmd[1]), cmd[1])


async def test_a_push_is_no_calls_reply(odd_server: Any) -> None:
    # (hiredis parses RESP3 pushes (a proxy that speaks RESP3 to redis and passes them on, a
    # server that is not redis): taken as the oldest call's reply, every later call got
    # the reply of the one before its own, a commit a push's words)
    url = await odd_server({b"ECHO": _echo_after_a_push})
    conn = await connect(parse_endpoint(url), 5.0)
    try:
        assert await conn.call("ECHO", "first", timeout=5.0) == b"first"
        assert await conn.call("ECHO", "second", timeout=5.0) == b"second"
    finally:
        await conn.aclose()


async def test_a_push_before_a_commits_answer_leaves_it_its_answer(odd_server: Any) -> None:
    url = await odd_server({b"EVALSHA": PUSH + b"*2\r\n$2\r\nok\r\n$0\r\n\r\n"})
    store = _store(url)
    try:
        stored: list[StateDoc] = []
        await store.commit(None, StateDoc(generation=1), AuditDraft("ops", "kill", {}, "x"),
                           on_stored=stored.append)
        assert [d.generation for d in stored] == [1]  # (the script's 'ok' read as its answer)
        assert store._committed is not None and store._committed[1] == 1
    finally:
        await store.close()


@pytest.mark.parametrize("role", [b":1\r\n", b"$-1\r\n", b"+master\r\n"],
                         ids=["integer", "nil", "status"])
async def test_a_node_the_sentinels_name_answering_role_oddly_is_no_master(
        odd_server: Any, role: bytes) -> None:
    # (ROLE's answer was indexed as it came: an integer raised TypeError out of the
    # connect, past every handler that names a store that cannot be reached)
    node = await odd_server({b"ROLE": role})
    port = node.rsplit(":", 1)[1].split("/")[0].encode()
    sentinel = await odd_server(
        {b"SENTINEL": b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(port), port)})
    at = sentinel.split("//")[1].split("/")[0]
    store = RedisStore(f"redis+sentinel://{at}/kgodd/0", "kgodd", 1.0, keys=state_keys())
    try:
        with pytest.raises(StoreUnavailable, match="not a master"):
            await store.poll()
    finally:
        await store.close()
