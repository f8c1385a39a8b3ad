"""The plumbing every part of the redis store shares: keys, connections, deadlines, seals.

Owns the key names under `<prefix>:`, the command connections ("cmd" for reads,
heartbeats and polls; "write" for commits and the WAIT after them), one deadline per
call, Lua scripts (EVALSHA, EVAL on first use), the translation of redis errors into
StoreUnavailable / StoreOutcomeUnknown / the caller's refusal, and sealing / opening the
signed records (gateway/state/signing.py) of the side stores. Imports resp.py, never
redis-py's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from gateway.config_redisurl import SPLIT_USERINFO, unreadable, userinfo_split
from gateway.errors import StoreOutcomeUnknown, StoreUnavailable
from gateway.state.redisbusy import busy
from gateway.state.resp import (
    Endpoint,
    NotResp,
    OnReply,
    RespConnection,
    RespError,
    connect,
    parse_endpoint,
)
from gateway.state.respprobe import WrongScheme
from gateway.state.signing import Keyring, cause_of
from gateway.state.store import OnUnverified, ignore_unverified

__all__ = ["OVERSIZED", "OWN", "SMALL", "RedisLink", "Script", "odd_reply"]


#: Lua: `own(key, type)` deletes a key of another type than the script writes to it. Only
#: someone with write access to the store puts one there, and nothing genuine is in it; left
#: alone, every command on it fails (WRONGTYPE): no commit, hence no kill and no re-seed.
OWN = """
local function own(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= kind then redis.call('DEL', key) end
end
"""


#: what SMALL answers for a value no generation or audit head can be (see there)
OVERSIZED = "<oversized>"

#: Lua: `small(key)`: a short string key's value (the generation, the audit head); nil for
#: an absent key or one of another type (as MGET); OVERSIZED for a value longer than any of
#: them can be, never the value: whoever can write to the store must not make the poll every
#: instance runs a few times a second a read of hundreds of megabytes on the loop the data
#: plane runs on (one SET of the head key did that until some write replaced it)
SMALL = """
local function small(key)
  if redis.call('TYPE', key)['ok'] ~= 'string' then return false end
  if redis.call('STRLEN', key) > 128 then return '""" + OVERSIZED + """' end
  return redis.call('GET', key)
end
"""

#: Lua, after SMALL: `doc`, the state document as _LOAD reads it, from KEYS[1] (the
#: document) and KEYS[2] (its generation): {the document or false, the generation, 0}, or
#: {false, the generation, its size} for a document over the size limit ARGV[1], not sent
DOC = """
local doc = {false, small(KEYS[2]), 0}
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  local n = redis.call('STRLEN', KEYS[1])
  if n > tonumber(ARGV[1]) then doc[3] = n else doc[1] = redis.call('GET', KEYS[1]) end
end
"""


class Script:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


def odd_reply(what: str, reply: Any, expected: str) -> str:
    """Words for a reply of another shape than redis gives `what` (our own scripts' answers
    are fixed): a proxy between that mangles replies, or a server that is not redis. Taken
    as it came, a commit answered `+OK` was a commit made, and other shapes raised
    TypeError (tests/test_resp_shapes.py)."""
    return (f"redis answered {what} with {repr(reply)[:80]}, not {expected} (is a proxy "
            "between, or a server that is not redis, at state.url?)")


def _demoted(conn: RespConnection, exc: RespError) -> None:
    """READONLY: the server we hold a connection to is a replica now (a failover demoted
    it). Drop the connection, so the next call connects afresh (through the sentinels, to
    the new primary) instead of hitting the same replica forever."""
    if str(exc).startswith("READONLY"):
        conn.close()


class RedisLink:
    def __init__(self, url: str, prefix: str, timeout: float, *, keys: Keyring,
                 audit_keys: Keyring | None = None,
                 on_unverified: OnUnverified = ignore_unverified) -> None:
        self.url = url
        self.timeout = timeout
        self.keys = keys.bound(prefix)
        self.audit_keys = audit_keys or keys
        self.on_unverified = on_unverified
        p = prefix
        self.k_state, self.k_gen = f"{p}:state", f"{p}:gen"
        self.k_audit, self.k_head = f"{p}:audit", f"{p}:audit:head"
        self.k_instances = f"{p}:instances"
        self.k_stats = f"{p}:stats"
        self.k_idem = f"{p}:idem"
        self.k_keys = f"{p}:keys"  # (retiredkeys.py)
        self.ch_events, self.ch_acks = f"{p}:events", f"{p}:acks"
        self.ch_fence = f"{p}:fence"  # (rediscommit._FENCE at maxmemory: heard by no one)
        self._endpoint: Endpoint | None = None
        # "cmd": reads, heartbeats, polls; "write": commits and the WAIT after them (WAIT
        # counts the writes of its own connection, and blocks it while it waits)
        self._conns: dict[str, RespConnection] = {}
        self._connecting: dict[str, asyncio.Future[RespConnection]] = {}
        self._lent: set[RespConnection] = set()  # (out of their slot for a while: _alone)

    def _ep(self) -> Endpoint:
        if self._endpoint is None:
            if userinfo_split(self.url):  # (the config refuses it: never a host made of it)
                raise StoreUnavailable(f"state.url cannot be used: {SPLIT_USERINFO}")
            try:
                self._endpoint = parse_endpoint(self.url)
            except (ValueError, OSError) as exc:
                raise StoreUnavailable(f"state.url cannot be used: {unreadable(self.url, exc)}"
                                       ) from None
        return self._endpoint

    async def _connect(self, on_message: Callable[[bytes, bytes], None] | None) -> RespConnection:
        ep = self._ep()
        try:
            return await connect(ep, self.timeout, on_message=on_message)
        except RespError as exc:  # (-BUSY refuses even the handshake: redisbusy.py)
            raise busy(str(exc), ep.describe()) or StoreUnavailable(
                f"redis at {ep.describe()} refused the connection: {exc}") from None
        except TimeoutError:
            raise StoreUnavailable(f"redis at {ep.describe()} did not answer in time") from None
        except WrongScheme as exc:  # (rediss:// at plain text, redis:// at TLS: respprobe.py)
            raise StoreUnavailable(str(exc)) from None
        except NotResp as exc:  # (it answered: "unreachable" would send one looking elsewhere)
            raise StoreUnavailable(f"redis at {ep.describe()} answered, but {exc}: does "
                                   f"state.url name a redis server's port?") from None
        except OSError as exc:  # ConnectionError included
            raise StoreUnavailable(f"redis at {ep.describe()} is unreachable: "
                                   f"{exc.strerror or exc}") from None

    async def _conn(self, slot: str = "cmd") -> RespConnection:
        """A command connection ("cmd" or "write"), (re)connected when needed. Callers that
        need it while it connects share that connect and its outcome: each taking a turn
        behind a lock, against a frozen redis the n-th gave up after n deadlines."""
        conn = self._conns.get(slot)
        if conn is not None and conn.is_open:
            return conn
        pending = self._connecting.get(slot)
        if pending is None:
            pending = self._connecting[slot] = asyncio.ensure_future(self._connect(None))
            pending.add_done_callback(lambda done: self._connected(slot, done))
        try:
            return await asyncio.shield(pending)  # (one that gives up leaves it to the rest)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if pending.cancelled() and task is not None and not task.cancelling():
                raise StoreUnavailable("the redis connection was closed as it connected") \
                    from None  # (the store closing: _close_conns)
            raise

    def _connected(self, slot: str, done: asyncio.Future[RespConnection]) -> None:
        if self._connecting.get(slot) is done:
            del self._connecting[slot]
        if not done.cancelled() and done.exception() is None:  # (retrieved: no "never")
            self._conns[slot] = done.result()

    @contextlib.contextmanager
    def _alone(self, slot: str, conn: RespConnection) -> Iterator[None]:
        """`conn` out of `slot` while a command blocks it (WAIT): calls meanwhile get a
        connection of their own rather than queue behind it. Back in the slot after, if
        the slot is still free; else closed."""
        if self._conns.get(slot) is conn:
            del self._conns[slot]
        self._lent.add(conn)
        try:
            yield
        finally:
            self._lent.discard(conn)
            if conn.is_open and slot not in self._conns and slot not in self._connecting:
                self._conns[slot] = conn
            elif conn is not self._conns.get(slot):
                conn.close()

    async def _close_conns(self) -> None:
        for lent in self._lent:  # (the store closes: whatever blocks them is given up)
            lent.close()
        pending, self._connecting = list(self._connecting.values()), {}
        for fut in pending:  # (one that connects after this would be left open)
            fut.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            await conn.aclose(self.timeout)

    async def _run(self, slot: str, args: tuple[str | bytes | int, ...], timeout: float,
                   refused: type[Exception], lost: type[Exception],
                   on_reply: OnReply | None = None, conn: RespConnection | None = None) -> Any:
        """One command on a connection slot (or on `conn`, that very connection: closed
        since, the call fails as `lost`). A reply error raises `refused` (NOSCRIPT to an
        EVALSHA is re-raised as is, for the caller to EVAL); a timeout or a reset, `lost`.
        `on_reply`: see RespConnection.send."""
        conn = conn or await self._conn(slot)  # failing here, nothing was sent
        if not conn.is_open:  # (nor here: closed as a shared connect ended, before our turn;
            # was `lost`, a commit never sent answered "outcome unknown, may be in force")
            raise StoreUnavailable("redis unavailable: the connection closed before the "
                                   "command was sent (nothing was sent)")
        try:
            return await conn.call(*args, timeout=timeout, on_reply=on_reply)
        except RespError as exc:
            if args[0] == "EVALSHA" and str(exc).startswith("NOSCRIPT"):
                raise
            _demoted(conn, exc)
            # (-LOADING, -BUSY: refused before it ran, whatever the command; said as the
            # caller's refusal, a commit's was "the audit trail cannot be written")
            raise busy(str(exc), self._where(conn)) or refused(f"redis refused: {exc}") \
                from None
        except TimeoutError:
            raise lost("redis did not answer in time") from None
        except OSError as exc:
            raise lost(f"redis unavailable: {exc}") from None

    def _where(self, conn: RespConnection) -> str:
        """The redis `conn` leads to, in words (the master the sentinels named)."""
        return f"{conn.address[0]}:{conn.address[1]}" if conn.address else self._ep().describe()

    async def _call(self, *args: str | bytes | int, timeout: float | None = None,
                    refused: type[Exception] = StoreUnavailable, slot: str = "cmd") -> Any:
        """Run one command with a deadline; a reply error raises `refused`."""
        return await self._run(slot, args, timeout or self.timeout, refused, StoreUnavailable)

    async def _script(self, script: Script, keys: list[str], args: list[str | bytes],
                      refused: type[Exception] = StoreUnavailable, writes: bool = False,
                      on_reply: OnReply | None = None, conn: RespConnection | None = None,
                      timeout: float | None = None) -> Any:
        """EVALSHA (EVAL the first time on a server). With `writes`, a timeout or a reset
        once the command is on its way raises StoreOutcomeUnknown: it may have run.
        `on_reply` sees every reply, error replies (NOSCRIPT) included. `conn`: see _run.
        `timeout`: the deadline (default: the command timeout)."""
        slot, lost = ("write", StoreOutcomeUnknown) if writes else ("cmd", StoreUnavailable)
        timeout = timeout or self.timeout
        try:
            return await self._run(slot, ("EVALSHA", script.sha, len(keys), *keys, *args),
                                   timeout, refused, lost, on_reply, conn)
        except RespError:  # NOSCRIPT: first use on this server (or after SCRIPT FLUSH)
            return await self._run(slot, ("EVAL", script.text, len(keys), *keys, *args),
                                   timeout, refused, lost, on_reply, conn)

    # ------------------------------------------------------------------ signed records

    def _sealed(self, kind: str, name: str, record: dict[str, Any]) -> bytes:
        """A JSON record signed for `kind` and `name` (its key), so it cannot be moved."""
        return self.keys.seal(f"{kind}:{name}".encode(), json.dumps(record).encode())

    def _opened(self, kind: str, name: str, raw: bytes, report: str) -> dict[str, Any] | None:
        """The record if it verifies; otherwise None, reported as `report`."""
        try:
            body, which = self.keys.open(f"{kind}:{name}".encode(), raw)
            value = json.loads(body)
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as exc:
            self.on_unverified(report, str(exc), None, cause_of(exc))
            return None
        if which == "previous":
            self.on_unverified(report, "", "previous")
        return value
