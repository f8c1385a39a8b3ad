"""A store outage on purpose, for the store-loss drill: `CLIENT PAUSE <ms> ALL` on redis.

Owns the one call a drill makes to the state store directly. Every client of that redis
(every gateway) waits from then on, as if the store were unreachable; the pause ends by
itself after its duration, also when the drill process dies meanwhile (redis cannot
lift it early: the pausing client is paused too). Redis errors leave as StoreUnavailable.
"""

from __future__ import annotations

from gateway.errors import StoreUnavailable
from gateway.state.resp import RespError, connect, parse_endpoint

__all__ = ["pause_store"]


async def pause_store(url: str, seconds: float, timeout: float = 2.0) -> None:
    """Make the redis at `url` answer no client for `seconds` (from now)."""
    try:
        ep = parse_endpoint(url)
        conn = await connect(ep, timeout, name="killgate-drill")
    except (OSError, RespError, TimeoutError, ValueError) as exc:
        raise StoreUnavailable(f"cannot reach the store to pause it: {exc}") from None
    try:
        await conn.call("CLIENT", "PAUSE", str(max(1, int(seconds * 1000))), "ALL",
                        timeout=timeout)
    except (OSError, RespError, TimeoutError) as exc:
        raise StoreUnavailable(f"the store refused the pause: {exc}") from None
    finally:
        conn.close()
