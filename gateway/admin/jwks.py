"""The admin API's key set from a JWKS URL (`admin.auth.jwks_url`): which key a `kid` names.

Owns the cache and its refetch rule: the set is fetched again when older than
`jwks_refresh_interval` (a key removed at the IdP stops verifying then) or, for an unknown
`kid`, at most once per `jwks_min_refetch_interval` (once per EMPTY_REFETCH while no set is
held); when the endpoint is down the last good set stays in use; one fetch at a time.
Imports no pyjwt: admin/auth.py hands it the fetch (`kid -> key` from the endpoint).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from gateway.errors import Unauthenticated

__all__ = ["EMPTY_REFETCH", "FETCH_DEADLINE", "MAX_SET_BYTES", "JwksKeys", "read_key_set"]

#: while no key set is held (the endpoint down since start), a fetch for an unknown kid at
#: most this often: tokens with ever new kids must not each cost a fetch (and a thread)
EMPTY_REFETCH = 1.0
#: a fetch of the set, whole (connect, head, body): every admin call waits for one that is
#: due, so an endpoint that answers without end (a byte at a time) must not hold them
FETCH_DEADLINE = 5.0
#: the largest key set read (a real one: a few keys, a few kB): an endpoint that answers
#: with gigabytes was read whole into the gateway's memory
MAX_SET_BYTES = 1024 * 1024


async def read_key_set(url: str) -> Any:
    """The JSON the key set URL answers with (200 only, no redirect: the URL was checked
    to be https), at most MAX_SET_BYTES; raises (OSError, ValueError, aiohttp's errors)
    when it cannot be read. The proxy variables apply, as they did to the fetch before."""
    timeout = aiohttp.ClientTimeout(total=FETCH_DEADLINE)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as s, \
            s.get(url, allow_redirects=False, headers={"Accept": "application/json"}) as r:
        if r.status != 200:
            raise ValueError(f"the key set URL answered {r.status}")
        if (r.content_length or 0) > MAX_SET_BYTES:
            raise ValueError(f"the key set is larger than {MAX_SET_BYTES} bytes")
        body = bytearray()
        async for chunk in r.content.iter_any():
            body += chunk
            if len(body) > MAX_SET_BYTES:
                raise ValueError(f"the key set is larger than {MAX_SET_BYTES} bytes")
    return json.loads(body)


class JwksKeys:
    """`fetch`: the endpoint's keys by kid; it raises when the endpoint cannot be read (and
    is cut at FETCH_DEADLINE)."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Any]]], refresh_interval: float,
                 min_refetch_interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._min_refetch_interval = min_refetch_interval
        self._last_fetch = -math.inf  # never: the first token fetches the set
        self._keys: dict[str, Any] = {}
        self._lock = asyncio.Lock()  # one fetch at a time; waiters use its keys

    async def key(self, kid: str | None) -> Any:
        """The key for `kid`. A token whose kid is not known waits for the fetch in
        flight (it may bring that kid)."""
        if kid is None:
            raise Unauthenticated()
        if self._refetch(kid) or (kid not in self._keys and self._lock.locked()):
            async with self._lock:  # (a fetch in flight may bring this kid)
                if self._refetch(kid):  # not if a fetch ended while this one waited
                    await self._refresh(self._clock())
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated()  # unknown kid: no refetch storm
        return key

    def _refetch(self, kid: str) -> bool:
        since = self._clock() - self._last_fetch
        if since > self._refresh_interval:
            return True
        floor = self._min_refetch_interval
        if not self._keys:
            floor = min(floor, EMPTY_REFETCH)
        return kid not in self._keys and since >= floor

    async def _refresh(self, now: float) -> None:
        self._last_fetch = now
        try:
            async with asyncio.timeout(FETCH_DEADLINE):
                keys = await self._fetch()
        except Exception:  # noqa: BLE001 - endpoint down: keep the last good set
            return
        finally:  # (counted from its end too: the tokens that waited for a slow fetch that
            # failed take its answer, rather than each start another after it)
            self._last_fetch = self._clock()
        self._keys = keys
