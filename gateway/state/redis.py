"""The shared state store (`state.backend: redis`) for many gateway instances.

Owns every key under `<prefix>:`:
  <p>:state       the state document (JSON)       <p>:gen         its generation
  <p>:audit       audit events (a stream)         <p>:audit:head  hash of the newest event
  <p>:instances   instance → "generation:server-ms:config-digest" (heartbeats, acks)
  <p>:stats:<route> instance → window counts (canary analysis)
  <p>:idem:<key>  an idempotency record (expires after a day)
  channels <p>:events (new documents) and <p>:acks ("instance generation").
Commits are one Lua script: compare the generation and the audit head, append the audit
event, replace the state, publish. The stored and published document carries the hash of
the event committed with it (`audit_head`), so every instance knows the current head and
the next commit, from whichever instance, is one round trip. Three connections
(gateway/state/resp.py): one for reads, heartbeats and polls, one for commits and the WAIT
after them, and one subscribed, whose messages reach the listener in the loop iteration
that read them. Every call has a deadline; redis errors leave this module only as
StoreUnavailable (StoreOutcomeUnknown when a commit may have run) / StoreConflict /
AuditError.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from gateway.domain.audit import GENESIS, AuditDraft, seal
from gateway.domain.statedoc import StateDoc
from gateway.errors import AuditError, StoreConflict, StoreOutcomeUnknown, StoreUnavailable
from gateway.log import event
from gateway.state.resp import Endpoint, RespConnection, RespError, connect, parse_endpoint
from gateway.state.store import Ack

__all__ = ["RedisStore"]

Listener = Callable[[StateDoc | Ack], None]

log = logging.getLogger("killgate.state")


class _Script:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


_COMMIT = _Script("""
local cur = redis.call('GET', KEYS[2])
if (cur or '') ~= ARGV[1] then return {'conflict', cur or ''} end
if ARGV[4] ~= '' then
  local head = redis.call('GET', KEYS[4]) or ARGV[7]
  if head ~= ARGV[5] then return {'audit_conflict', head} end
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[4])
  redis.call('SET', KEYS[4], ARGV[6])
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[8], ARGV[2])
return {'ok', ''}
""")

_HEARTBEAT = _Script("""
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ms .. ':' .. ARGV[4] .. ARGV[5])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. ARGV[2])
return ms
""")

_LIVE = _Script("""
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {ms, redis.call('HGETALL', KEYS[1])}
""")


def _urls(tail: str) -> dict[str, str]:
    """The addresses an instance published with its heartbeat (data, admin), if any."""
    try:
        got = json.loads(tail) if tail else {}
    except ValueError:
        return {}
    if not isinstance(got, dict):
        return {}
    return {k: v for k, v in got.items() if k in ("data", "admin") and isinstance(v, str)}


def _demoted(conn: RespConnection, exc: RespError) -> None:
    """READONLY: the server we hold a connection to is a replica now (a failover demoted
    it). Drop the connection, so the next call connects afresh (through the sentinels, to
    the new primary) instead of hitting the same replica forever."""
    if str(exc).startswith("READONLY"):
        conn.close()


class RedisStore:
    backend = "redis"
    pushes = True

    def __init__(self, url: str, prefix: str, timeout: float, silence: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.silence = silence  # a subscription that hears nothing this long is dead
        p = prefix
        self.k_state, self.k_gen = f"{p}:state", f"{p}:gen"
        self.k_audit, self.k_head = f"{p}:audit", f"{p}:audit:head"
        self.k_instances = f"{p}:instances"
        self.k_stats = f"{p}:stats"
        self.k_idem = f"{p}:idem"
        self.ch_events, self.ch_acks = f"{p}:events", f"{p}:acks"
        self._b_events, self._b_acks = self.ch_events.encode(), self.ch_acks.encode()
        self._endpoint: Endpoint | None = None
        # "cmd": reads, heartbeats, polls; "write": commits and the WAIT after them (WAIT
        # counts the writes of its own connection, and blocks it while it waits)
        self._conns: dict[str, RespConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._sub: RespConnection | None = None
        self._listener: Listener | None = None
        # the audit head as of the newest document we saw or wrote (a guess the commit checks)
        self._head: str | None = None
        self._head_gen = 0

    # ------------------------------------------------------------------ connections

    def _ep(self) -> Endpoint:
        if self._endpoint is None:
            try:
                self._endpoint = parse_endpoint(self.url)
            except (ValueError, OSError) as exc:
                raise StoreUnavailable(f"state.url cannot be used: {exc}") from None
        return self._endpoint

    async def _connect(self, on_message: Callable[[bytes, bytes], None] | None) -> RespConnection:
        ep = self._ep()
        try:
            return await connect(ep, self.timeout, on_message=on_message)
        except RespError as exc:
            raise StoreUnavailable(f"redis at {ep.describe()} refused the connection: {exc}") \
                from None
        except TimeoutError:
            raise StoreUnavailable(f"redis at {ep.describe()} did not answer in time") from None
        except OSError as exc:  # ConnectionError included
            raise StoreUnavailable(f"redis at {ep.describe()} is unreachable: "
                                   f"{exc.strerror or exc}") from None

    async def _conn(self, slot: str = "cmd") -> RespConnection:
        """A command connection ("cmd" or "write"), (re)connected when needed."""
        conn = self._conns.get(slot)
        if conn is not None and conn.is_open:
            return conn
        lock = self._connecting.setdefault(slot, asyncio.Lock())
        async with lock:
            conn = self._conns.get(slot)
            if conn is None or not conn.is_open:
                conn = self._conns[slot] = await self._connect(None)
            return conn

    async def _run(self, slot: str, args: tuple[str | bytes | int, ...], timeout: float,
                   refused: type[Exception], lost: type[Exception]) -> Any:
        """One command on a connection slot. A reply error raises `refused` (NOSCRIPT to an
        EVALSHA is re-raised as is, for the caller to EVAL); a timeout or a reset, `lost`."""
        conn = await self._conn(slot)  # failing here, nothing was sent
        try:
            return await conn.call(*args, timeout=timeout)
        except RespError as exc:
            if args[0] == "EVALSHA" and str(exc).startswith("NOSCRIPT"):
                raise
            _demoted(conn, exc)
            raise refused(f"redis refused: {exc}") from None
        except TimeoutError:
            raise lost("redis did not answer in time") from None
        except OSError as exc:
            raise lost(f"redis unavailable: {exc}") from None

    async def _call(self, *args: str | bytes | int, timeout: float | None = None,
                    refused: type[Exception] = StoreUnavailable, slot: str = "cmd") -> Any:
        """Run one command with a deadline; a reply error raises `refused`."""
        return await self._run(slot, args, timeout or self.timeout, refused, StoreUnavailable)

    async def _script(self, script: _Script, keys: list[str], args: list[str],
                      refused: type[Exception] = StoreUnavailable, writes: bool = False) -> Any:
        """EVALSHA (EVAL the first time on a server). With `writes`, a timeout or a reset
        once the command is on its way raises StoreOutcomeUnknown: it may have run."""
        slot, lost = ("write", StoreOutcomeUnknown) if writes else ("cmd", StoreUnavailable)
        try:
            return await self._run(slot, ("EVALSHA", script.sha, len(keys), *keys, *args),
                                   self.timeout, refused, lost)
        except RespError:  # NOSCRIPT: first use on this server (or after SCRIPT FLUSH)
            return await self._run(slot, ("EVAL", script.text, len(keys), *keys, *args),
                                   self.timeout, refused, lost)

    def listen(self, fn: Listener) -> None:
        """Pushed documents and acks go straight to `fn` as they are read."""
        self._listener = fn

    def _on_message(self, channel: bytes, data: bytes) -> None:
        item: StateDoc | Ack | None = None
        if channel == self._b_events:
            # not a document we can read: the poll will load it (and report it)
            with contextlib.suppress(ValueError, RecursionError):  # RecursionError: nesting
                item = self._doc(json.loads(data))
        elif channel == self._b_acks:
            inst, _, gen = data.decode("utf-8", "replace").rpartition(" ")
            if gen.isdigit():
                item = Ack(inst, int(gen))
        if item is None or self._listener is None:
            return  # with nobody listening, the poll finds the change
        try:
            self._listener(item)
        except Exception as exc:  # noqa: BLE001 - a bug there must not end the subscription
            event(log, "state_push_failed", logging.ERROR, error=repr(exc))

    async def open(self) -> None:
        """Connect the command connection and (re)subscribe. Safe to call again after reset."""
        await self.reset()
        await self._conn()
        await self._conn("write")
        # Subscribe first, then the caller loads: a change published in between is
        # seen either by the load or by the subscription.
        sub = await self._connect(self._on_message)
        try:
            for ch in (self.ch_events, self.ch_acks):
                await sub.call("SUBSCRIBE", ch, timeout=self.timeout)
        except (RespError, TimeoutError, OSError) as exc:
            await sub.aclose()
            raise StoreUnavailable(f"could not subscribe: {exc or type(exc).__name__}") from None
        self._sub = sub

    async def reset(self) -> None:
        """Drop the subscription (after an error); the command connection is checked on use."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.aclose(self.timeout)

    async def close(self) -> None:
        await self.reset()
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            await conn.aclose(self.timeout)

    # ------------------------------------------------------------------ state

    async def load(self) -> StateDoc | None:
        raw = await self._call("GET", self.k_state)
        if raw is None:
            return None
        try:
            return self._doc(json.loads(raw))
        except (ValueError, RecursionError) as exc:  # JSON errors are ValueErrors too
            raise StoreUnavailable(f"{self.k_state} does not hold a valid state document: "
                                   f"{exc}") from None

    def _doc(self, d: Any) -> StateDoc:
        """A stored or pushed document; its `audit_head` becomes our guess of the head."""
        doc = StateDoc.from_json(d)
        head = d.get("audit_head")
        if isinstance(head, str) and head and doc.generation >= self._head_gen:
            self._head, self._head_gen = head, doc.generation
        return doc

    async def generation(self) -> int | None:
        raw = await self._call("GET", self.k_gen)
        return None if raw is None else int(raw)

    async def commit(self, expected: int | None, doc: StateDoc,
                     draft: AuditDraft | None) -> dict[str, Any] | None:
        plain_doc = doc.to_json()
        base = draft.as_event() if draft is not None else None
        # The head named by the newest document we saw is nearly always still the head:
        # one round trip. When it moved, the script says which head is current and we retry.
        head = self._head or GENESIS
        for _ in range(5):
            event = seal(base, head) if base is not None else None
            body = json.dumps(plain_doc if event is None
                              else {**plain_doc, "audit_head": event["hash"]})
            args = ["" if expected is None else str(expected), body, str(doc.generation),
                    json.dumps(event, ensure_ascii=False) if event else "", head,
                    event["hash"] if event else "", GENESIS, self.ch_events]
            # READONLY replica, OOM, script errors: nothing was written, the action is refused.
            res = await self._script(
                _COMMIT, [self.k_state, self.k_gen, self.k_audit, self.k_head], args,
                refused=AuditError, writes=True)
            status = res[0].decode() if isinstance(res[0], bytes) else str(res[0])
            if status == "conflict":
                raise StoreConflict("the state changed under us")
            if status == "audit_conflict":
                head = res[1].decode() if isinstance(res[1], bytes) else str(res[1])
                continue
            if event is not None and doc.generation >= self._head_gen:
                self._head, self._head_gen = event["hash"], doc.generation
            return event
        raise StoreConflict("the audit head kept changing under us")

    async def watch(self, timeout: float) -> list[StateDoc | Ack]:
        """Wait up to `timeout`, or until the subscription is lost (StoreUnavailable).
        Pushes never queue here: they reach the listener as they are read."""
        sub = self._sub
        if sub is None or sub.closed.done():
            raise StoreUnavailable("the redis subscription was lost")
        if asyncio.get_running_loop().time() - sub.last_rx > self.silence:
            # not even our own heartbeats come back: a half-open connection
            raise StoreUnavailable(f"the redis subscription heard nothing for "
                                   f"{self.silence:g}s")
        await asyncio.wait({sub.closed}, timeout=timeout)
        if sub.closed.done():
            raise StoreUnavailable("the redis subscription was lost")
        return []

    async def replicated(self, replicas: int, timeout: float) -> int:
        """WAIT on the connection that committed: replicas that acknowledged its writes.
        It has that connection to itself (heartbeats and polls do not queue behind it)."""
        return int(await self._call("WAIT", replicas, max(1, int(timeout * 1000)),
                                    timeout=timeout + self.timeout, slot="write"))

    # ------------------------------------------------------------------ instances

    async def heartbeat(self, instance: str, applied: int, config: str = "",
                        urls: dict[str, str] | None = None) -> None:
        # the addresses ride after a space (a digest has none): "gen:ms:digest {json}"
        tail = " " + json.dumps(urls, separators=(",", ":")) if urls else ""
        await self._script(_HEARTBEAT, [self.k_instances],
                           [instance, str(applied), self.ch_acks, config, tail])

    async def fleet(self, lease: float) -> dict[str, dict[str, Any]]:
        now_ms, flat = await self._script(_LIVE, [self.k_instances], [])
        out: dict[str, dict[str, Any]] = {}
        stale: list[bytes] = []
        for i in range(0, len(flat), 2):
            value, _, tail = flat[i + 1].decode().partition(" ")
            gen_s, seen_s, config = ([*value.split(":", 2), "", ""])[:3]
            age = (int(now_ms) - int(seen_s or 0)) / 1000.0
            if age <= lease:
                out[flat[i].decode()] = {"generation": int(gen_s or 0), "config": config,
                                         "seen_s_ago": round(age, 3), **_urls(tail)}
            elif age > 10 * lease:
                stale.append(flat[i])
        if stale:
            await self._call("HDEL", self.k_instances, *stale)
        return out

    async def live_instances(self, lease: float) -> dict[str, int]:
        return {k: v["generation"] for k, v in (await self.fleet(lease)).items()}

    async def leave(self, instance: str) -> None:
        await self._call("HDEL", self.k_instances, instance)

    # ------------------------------------------------------------------ idempotency

    async def idem_claim(self, key: str, record: dict[str, Any], ttl: float) -> dict[str, Any] | None:
        k = f"{self.k_idem}:{key}"
        if await self._call("SET", k, json.dumps(record), "NX", "PX", int(ttl * 1000)):
            return None
        raw = await self._call("GET", k)
        return json.loads(raw) if raw else None

    async def idem_set(self, key: str, record: dict[str, Any], ttl: float) -> None:
        await self._call("SET", f"{self.k_idem}:{key}", json.dumps(record),
                         "PX", int(ttl * 1000))

    async def idem_release(self, key: str) -> None:
        await self._call("DEL", f"{self.k_idem}:{key}")

    # ------------------------------------------------------------------ analysis counts

    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None:
        await self._call("HSET", f"{self.k_stats}:{route}", instance, json.dumps(blob))

    async def get_stats(self, route: str) -> list[dict[str, Any]]:
        flat = await self._call("HGETALL", f"{self.k_stats}:{route}")
        out = []
        for v in flat[1::2]:
            with contextlib.suppress(ValueError):
                out.append(json.loads(v))
        return out

    # ------------------------------------------------------------------ audit

    @staticmethod
    def _decode(entries: Any) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for sid, flat in entries or []:
            fields = dict(zip(flat[::2], flat[1::2], strict=False))
            raw = fields.get(b"e", b"")
            try:
                ev = json.loads(raw)
            except ValueError:
                ev = {"id": sid.decode(), "unparseable": raw.decode("utf-8", "replace")}
            out.append((sid.decode(), ev))
        return out

    async def audit_events(self) -> list[dict[str, Any]]:
        entries = await self._call("XRANGE", self.k_audit, "-", "+", timeout=self.timeout * 10)
        return [ev for _, ev in self._decode(entries)]

    async def audit_since(self, cursor: str | None,
                          limit: int) -> tuple[list[dict[str, Any]], str | None]:
        lo = f"({cursor}" if cursor else "-"
        pairs = self._decode(await self._call(
            "XRANGE", self.k_audit, lo, "+", "COUNT", limit))
        return [ev for _, ev in pairs], (pairs[-1][0] if pairs else cursor)

    async def audit_head(self) -> str | None:
        raw = await self._call("GET", self.k_head)
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))

    async def audit_page(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]],
                                                                        str | None]:
        """`before` and the returned cursor are stream entry ids (opaque to callers)."""
        hi = f"({before}" if before else "+"
        entries = await self._call("XREVRANGE", self.k_audit, hi, "-", "COUNT", limit + 1)
        pairs = self._decode(entries)
        nxt = pairs[limit - 1][0] if len(pairs) > limit else None
        return [ev for _, ev in pairs[:limit]], nxt
