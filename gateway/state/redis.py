"""The shared state store (`state.backend: redis`) for many gateway instances.

Owns every key under `<prefix>:` and the only import of redis-py:
  <p>:state       the state document (JSON)       <p>:gen         its generation
  <p>:audit       audit events (a stream)         <p>:audit:head  hash of the newest event
  <p>:instances   instance → "generation:server-ms:config-digest" (heartbeats, acks)
  <p>:stats:<route> instance → window counts (canary analysis)
  <p>:idem:<key>  an idempotency record (expires after a day)
  channels <p>:events (new documents) and <p>:acks ("instance generation").
Commits are one Lua script: compare the generation and the audit head, append the audit
event, replace the state, publish. Every call has an outer timeout and redis-py's own
retries are off (they stall ~10 s on a frozen server); redis errors leave this module
only as StoreUnavailable / StoreConflict / AuditError.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from gateway.audit import GENESIS, AuditDraft, seal
from gateway.errors import AuditError, StoreConflict, StoreUnavailable
from gateway.model import StateDoc
from gateway.state.store import Ack

__all__ = ["RedisStore", "client_from_url"]

T = TypeVar("T")

_COMMIT = """
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
"""

_HEARTBEAT = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ms .. ':' .. ARGV[4])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. ARGV[2])
return ms
"""

_LIVE = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {ms, redis.call('HGETALL', KEYS[1])}
"""


def client_from_url(url: str, timeout: float) -> aioredis.Redis:
    """redis://, rediss://, unix:// and redis+sentinel://h1:26379,h2:26379/service[/db]."""
    opts: dict[str, Any] = {
        "socket_timeout": timeout, "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0), "retry_on_timeout": False,
        "health_check_interval": 0, "decode_responses": False,
        "client_name": "killgate",
    }
    if not url.startswith("redis+sentinel://"):
        return aioredis.Redis.from_url(url, **opts)
    u = urlsplit(url)
    hosts = []
    for hp in u.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = hp.rpartition(":")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port or 26379)))
    parts = [p for p in u.path.split("/") if p]
    if not parts:
        raise StoreUnavailable("redis+sentinel:// URL needs the service name: "
                               "redis+sentinel://host:26379/mymaster/0")
    service = parts[0]
    db = int(parts[1]) if len(parts) > 1 else 0
    password = unquote(u.password) if u.password else None
    sentinel = Sentinel(hosts, socket_timeout=timeout, sentinel_kwargs={
        "socket_timeout": timeout, "socket_connect_timeout": timeout, "password": password})
    return sentinel.master_for(service, db=db, password=password, **opts)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


class RedisStore:
    backend = "redis"
    pushes = True

    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        p = prefix
        self.k_state, self.k_gen = f"{p}:state", f"{p}:gen"
        self.k_audit, self.k_head = f"{p}:audit", f"{p}:audit:head"
        self.k_instances = f"{p}:instances"
        self.k_stats = f"{p}:stats"
        self.k_idem = f"{p}:idem"
        self.ch_events, self.ch_acks = f"{p}:events", f"{p}:acks"
        self.r: aioredis.Redis | None = None
        self._ps: Any = None
        self._orphans: set[asyncio.Future[Any]] = set()
        self._head: str | None = None  # hash of the audit event we last appended

    async def _call(self, aw: Awaitable[T], timeout: float | None = None,
                    refused: type[Exception] = StoreUnavailable) -> T:
        """Run one redis call with an outer deadline that cannot be defeated.

        redis-py calls do not always finish promptly when cancelled (a pub/sub read can
        swallow the cancellation), so the call runs as its own task: on timeout or on our
        own cancellation it is cancelled and left to finish on its own, never awaited.
        """
        task: asyncio.Future[T] = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout or self.timeout)
        except asyncio.CancelledError:
            self._orphan(task)
            raise
        if not done:
            self._orphan(task)
            raise StoreUnavailable("redis did not answer in time")
        try:
            return task.result()
        except ResponseError as exc:
            raise refused(f"redis refused: {exc}") from None
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis unavailable: {exc}") from None

    def _orphan(self, task: asyncio.Future[Any]) -> None:
        task.cancel()
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)
        task.add_done_callback(_consume)

    async def open(self) -> None:
        """Create the command client once; (re)subscribe. Safe to call again after reset."""
        if self.r is None:
            self.r = client_from_url(self.url, self.timeout)
            self._commit = self.r.register_script(_COMMIT)
            self._heartbeat = self.r.register_script(_HEARTBEAT)
            self._live = self.r.register_script(_LIVE)
        await self.reset()
        # Subscribe first, then the caller loads: a change published in between is
        # seen either by the load or by the subscription.
        ps = self.r.pubsub()
        self._ps = ps
        await self._call(ps.subscribe(self.ch_events, self.ch_acks))

    async def reset(self) -> None:
        """Drop the subscription (after an error); the command client stays usable."""
        ps, self._ps = self._ps, None
        if ps is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._call(ps.aclose())

    async def close(self) -> None:
        await self.reset()
        r, self.r = self.r, None
        if r is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._call(r.aclose())
        if self._orphans:
            await asyncio.wait(set(self._orphans), timeout=self.timeout)

    def _client(self) -> aioredis.Redis:
        if self.r is None:
            raise StoreUnavailable("not connected to redis")
        return self.r

    # ------------------------------------------------------------------ state

    async def load(self) -> StateDoc | None:
        raw = await self._call(self._client().get(self.k_state))
        if raw is None:
            return None
        try:
            return StateDoc.from_json(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise StoreUnavailable(f"{self.k_state} holds invalid JSON: {exc}") from None

    async def generation(self) -> int | None:
        raw = await self._call(self._client().get(self.k_gen))
        return None if raw is None else int(raw)

    async def commit(self, expected: int | None, doc: StateDoc,
                     draft: AuditDraft | None) -> dict[str, Any] | None:
        body = json.dumps(doc.to_json())
        base = draft.as_event() if draft is not None else None
        # The audit head we last wrote is usually still the head: one round trip. When
        # another writer moved it, the script says which head is current and we retry.
        head = self._head or GENESIS
        for _ in range(5):
            event = seal(base, head) if base is not None else None
            args = ["" if expected is None else str(expected), body, str(doc.generation),
                    json.dumps(event, ensure_ascii=False) if event else "", head,
                    event["hash"] if event else "", GENESIS, self.ch_events]
            # READONLY replica, OOM, script errors: nothing was written, the action is refused.
            res = await self._call(
                self._commit(keys=[self.k_state, self.k_gen, self.k_audit, self.k_head],
                             args=args),
                refused=AuditError)
            status = res[0].decode() if isinstance(res[0], bytes) else str(res[0])
            if status == "conflict":
                raise StoreConflict("the state changed under us")
            if status == "audit_conflict":
                head = res[1].decode() if isinstance(res[1], bytes) else str(res[1])
                continue
            if event is not None:
                self._head = event["hash"]
            return event
        raise StoreConflict("the audit head kept changing under us")

    async def watch(self, timeout: float) -> list[StateDoc | Ack]:
        ps = self._ps
        if ps is None:
            raise StoreUnavailable("not subscribed")
        out: list[StateDoc | Ack] = []
        wait = timeout
        while True:
            msg = await self._call(ps.get_message(ignore_subscribe_messages=True, timeout=wait),
                                   wait + self.timeout)
            if msg is None:
                return out
            chan = msg["channel"].decode()
            data = msg["data"]
            if chan == self.ch_events:
                with contextlib.suppress(ValueError, TypeError):  # the poll will load it
                    out.append(StateDoc.from_json(json.loads(data)))
            elif chan == self.ch_acks:
                inst, _, gen = data.decode().rpartition(" ")
                if gen.isdigit():
                    out.append(Ack(inst, int(gen)))
            wait = 0.0  # drain what is already here, then return

    # ------------------------------------------------------------------ instances

    async def heartbeat(self, instance: str, applied: int, config: str = "") -> None:
        await self._call(self._heartbeat(keys=[self.k_instances],
                                         args=[instance, str(applied), self.ch_acks, config]))

    async def fleet(self, lease: float) -> dict[str, dict[str, Any]]:
        now_ms, flat = await self._call(self._live(keys=[self.k_instances]))
        out: dict[str, dict[str, Any]] = {}
        stale: list[bytes] = []
        for i in range(0, len(flat), 2):
            gen_s, seen_s, config = ([*flat[i + 1].decode().split(":", 2), "", ""])[:3]
            age = (int(now_ms) - int(seen_s or 0)) / 1000.0
            if age <= lease:
                out[flat[i].decode()] = {"generation": int(gen_s or 0), "config": config,
                                         "seen_s_ago": round(age, 3)}
            elif age > 10 * lease:
                stale.append(flat[i])
        if stale:
            await self._call(self._client().hdel(self.k_instances, *stale))
        return out

    async def live_instances(self, lease: float) -> dict[str, int]:
        return {k: v["generation"] for k, v in (await self.fleet(lease)).items()}

    async def leave(self, instance: str) -> None:
        await self._call(self._client().hdel(self.k_instances, instance))

    # ------------------------------------------------------------------ idempotency

    async def idem_claim(self, key: str, record: dict[str, Any], ttl: float) -> dict[str, Any] | None:
        r = self._client()
        k = f"{self.k_idem}:{key}"
        if await self._call(r.set(k, json.dumps(record), nx=True, px=int(ttl * 1000))):
            return None
        raw = await self._call(r.get(k))
        return json.loads(raw) if raw else None

    async def idem_set(self, key: str, record: dict[str, Any], ttl: float) -> None:
        await self._call(self._client().set(f"{self.k_idem}:{key}", json.dumps(record),
                                            px=int(ttl * 1000)))

    async def idem_release(self, key: str) -> None:
        await self._call(self._client().delete(f"{self.k_idem}:{key}"))

    # ------------------------------------------------------------------ analysis counts

    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None:
        await self._call(self._client().hset(f"{self.k_stats}:{route}", instance,
                                             json.dumps(blob)))

    async def get_stats(self, route: str) -> list[dict[str, Any]]:
        raw = await self._call(self._client().hgetall(f"{self.k_stats}:{route}"))
        out = []
        for v in raw.values():
            with contextlib.suppress(ValueError):
                out.append(json.loads(v))
        return out

    # ------------------------------------------------------------------ audit

    @staticmethod
    def _decode(entries: Any) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for sid, fields in entries or []:
            raw = fields.get(b"e", b"")
            try:
                ev = json.loads(raw)
            except ValueError:
                ev = {"id": sid.decode(), "unparseable": raw.decode("utf-8", "replace")}
            out.append((sid.decode(), ev))
        return out

    async def audit_events(self) -> list[dict[str, Any]]:
        entries = await self._call(self._client().xrange(self.k_audit), self.timeout * 10)
        return [ev for _, ev in self._decode(entries)]

    async def audit_since(self, cursor: str | None,
                          limit: int) -> tuple[list[dict[str, Any]], str | None]:
        lo = f"({cursor}" if cursor else "-"
        pairs = self._decode(await self._call(
            self._client().xrange(self.k_audit, lo, "+", count=limit)))
        return [ev for _, ev in pairs], (pairs[-1][0] if pairs else cursor)

    async def audit_page(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]],
                                                                        str | None]:
        """`before` and the returned cursor are stream entry ids (opaque to callers)."""
        hi = f"({before}" if before else "+"
        entries = await self._call(self._client().xrevrange(self.k_audit, hi, "-",
                                                            count=limit + 1))
        pairs = self._decode(entries)
        nxt = pairs[limit - 1][0] if len(pairs) > limit else None
        return [ev for _, ev in pairs[:limit]], nxt
