"""A real redis-server that answers -BUSY (a Lua script past busy-reply-threshold) or
-LOADING (loading its dataset at start): every store call says which, and what to do
(StoreBusy: SCRIPT KILL; retry in a moment), nothing is changed, and the admin API answers
503 with its own type and a Retry-After; `killgate status` says it (state/redisbusy.py).

Before: a commit refused so raised AuditError, a write answered 503 `audit_unavailable`
("the audit trail cannot be written": an operator looked at the trail), every other call
"redis refused: BUSY ..." as a store that cannot be reached."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreBusy
from gateway.state.redis import RedisStore
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    die_with_parent,
    running_gateway,
    two_versions,
    wait_until,
    wait_until_sync,
    write_config,
)
from tests.staterig import redis_state, state_keys
from tests.test_cli import acli
from tests.test_killswitch import auth, token

pytestmark = pytest.mark.timeout(60)

PREFIX = "kgbusy"


def _store(url: str) -> RedisStore:
    return RedisStore(url, PREFIX, 1.0, keys=state_keys())


def _kill(generation: int) -> tuple[StateDoc, AuditDraft]:
    return StateDoc(generation=generation), AuditDraft("ops", "kill", {}, "x")


@contextlib.contextmanager
def busy_script(redis: RedisServer) -> Iterator[None]:
    """A Lua script looping past a 50 ms busy-reply-threshold (sent on a socket of its
    own, never read): redis answers every other client -BUSY until SCRIPT KILL, after."""
    assert redis.cmd("CONFIG", "SET", "busy-reply-threshold", "50") == "OK"
    loop = socket.create_connection(("127.0.0.1", redis.port), timeout=5)
    try:
        loop.sendall(b"*3\r\n$4\r\nEVAL\r\n$17\r\nwhile true do end\r\n$1\r\n0\r\n")
        wait_until_sync(lambda: redis.cmd("PING").startswith("BUSY"), 10,
                        what="redis to answer BUSY")
        yield
    finally:
        wait_until_sync(lambda: redis.cmd("SCRIPT", "KILL") in ("OK", "NOTBUSY No scripts in "
                                                                      "execution right now."),
                        10, what="SCRIPT KILL")
        loop.close()
        wait_until_sync(lambda: redis.cmd("PING") == "PONG", 10, what="redis to answer again")


@pytest.fixture
def loading_redis(tmp_path: Path, redis_server: RedisServer) -> Iterator[RedisServer]:
    """Another redis-server started on a dump of 20,000 keys, loading each 2 ms late
    (key-load-delay): it answers -LOADING for ~40 s; stopped after."""
    assert redis_server.cmd("EVAL", "for i = 1, 20000 do redis.call('SET', 'pad' .. i, i) end",
                            "0") == ""
    assert redis_server.cmd("SAVE") == "OK"
    loading = RedisServer(tmp_path)  # (its port; started here on the dump)
    loading.proc = subprocess.Popen(
        [loading.exe, "--port", str(loading.port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--dbfilename", "dump.rdb",
         "--key-load-delay", "2000", "--loading-process-events-interval-bytes", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        def says_loading() -> bool:
            with contextlib.suppress(OSError):
                return loading.cmd("PING").startswith("LOADING")
            return False

        wait_until_sync(says_loading, 10, what="redis to answer LOADING")
        yield loading
    finally:
        loading.kill()


async def test_a_script_past_its_time_limit_is_said_so_and_changes_nothing(
        redis_server: RedisServer) -> None:
    store = _store(redis_server.url)
    fresh = _store(redis_server.url)
    try:
        await store.commit(None, *_kill(1))  # (the scripts loaded, the connections open)
        with busy_script(redis_server):
            with pytest.raises(StoreBusy, match="SCRIPT KILL") as got:
                await store.poll()
            assert got.value.type == "state_store_busy" and got.value.retry_after == 5
            with pytest.raises(StoreBusy, match="SCRIPT KILL"):  # (was AuditError)
                await store.commit(1, *_kill(2))
            with pytest.raises(StoreBusy, match="SCRIPT KILL"):  # (its handshake refused)
                await fresh.poll()
        assert (await store.load()).doc.generation == 1  # (nothing changed)
    finally:
        await store.close()
        await fresh.close()


async def test_a_store_loading_its_dataset_is_said_so_and_changes_nothing(
        loading_redis: RedisServer) -> None:
    store = _store(loading_redis.url)
    try:
        with pytest.raises(StoreBusy, match="loading its dataset") as got:
            await store.poll()
        assert got.value.type == "state_store_loading" and got.value.retry_after == 2
        with pytest.raises(StoreBusy, match="retry in a moment"):  # (was AuditError)
            await store.commit(None, *_kill(1))
        with pytest.raises(StoreBusy, match="loading its dataset"):
            await store.open()  # (it subscribes; its PING, as kept() sends it, is refused)
            await store.kept()
        assert loading_redis.cmd("PING").startswith("LOADING")  # (all of it, while loading)
    finally:
        await store.close()
    assert loading_redis.cmd("EXISTS", f"{PREFIX}:state").startswith("LOADING")


@contextlib.asynccontextmanager
async def _gateway(tmp_path: Path, backends: object, redis: RedisServer) -> AsyncIterator[str]:
    p = await backends(echo_app("v1"))  # type: ignore[operator]
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis, tmp_path))
    async with running_gateway(cfg) as g:
        yield g.admin


async def _generation(session: object, admin: str) -> int:
    async with session.get(f"{admin}/v1/status", headers=auth()) as r:  # type: ignore[attr-defined]
        return int((await r.json())["generation"])


KILL = {"scope": "version", "route": "iris", "version": "v1", "reason": "bad"}


async def _kill_refused(session: object, admin: str, headers: dict[str, str], kind: str,
                        words: str, retry: str) -> None:
    """A kill of iris/v1 answered 503 `kind`, its message saying `words`, Retry-After
    `retry`."""
    async with session.post(f"{admin}/v1/kill", json=KILL,  # type: ignore[attr-defined]
                            headers=headers) as r:
        answer = await r.json()
        assert r.status == 503, answer
        assert answer["error"]["type"] == kind, answer
        assert words in answer["error"]["message"], answer
        assert r.headers["Retry-After"] == retry


async def _status_says(admin: str, words: str) -> str:
    """`killgate status`'s output once it says `words`."""
    env = {"KILLGATE_ADMIN_URL": admin, "KILLGATE_TOKEN": token()}

    async def said() -> str:
        res = await acli("status", env=env)
        return res.stdout if words in res.stdout else ""

    return await wait_until(said, 20, 0.2, what=f"`killgate status` to say {words!r}")


async def test_the_admin_api_and_status_say_a_busy_store(
        tmp_path: Path, backends: object, session: object,
        redis_server: RedisServer) -> None:
    async with _gateway(tmp_path, backends, redis_server) as admin:
        before = await _generation(session, admin)
        with busy_script(redis_server):
            for key in ({}, {"Idempotency-Key": "k1"}):  # (the claim's refusal too)
                await _kill_refused(session, admin, {**auth(), **key}, "state_store_busy",
                                    "SCRIPT KILL", "5")
            text = await _status_says(admin, "SCRIPT KILL")
            assert "STORE ERROR: a Lua script on redis at" in text, text
        assert await _generation(session, admin) == before  # (nothing changed)
        async with session.post(f"{admin}/v1/kill", json=KILL,  # type: ignore[attr-defined]
                                headers=auth()) as r:
            assert r.status == 200, await r.text()  # (once it ends, a kill goes through)


async def test_the_admin_api_says_a_store_loading_its_dataset(
        tmp_path: Path, backends: object, session: object, redis_server: RedisServer,
        loading_redis: RedisServer) -> None:
    # (the gateway starts on a store that loads: not ready, its admin API answers)
    async with _gateway(tmp_path, backends, loading_redis) as admin:
        await _kill_refused(session, admin, auth(), "state_store_loading",
                            "retry in a moment", "2")
        text = await _status_says(admin, "loading its dataset")
        assert "retry in a moment" in text, text
