"""A store outage on purpose, for the store-loss drill: `CLIENT PAUSE <ms> ALL` on redis.

Owns the one call a drill makes to the state store directly. Every client of that redis
(every gateway) waits from then on, as if the store were unreachable; the pause ends by
itself after its duration, also when the drill process dies meanwhile (redis cannot
lift it early: the pausing client is paused too). Redis errors leave as StoreUnavailable.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.config_redisurl import SPLIT_USERINFO, unreadable, userinfo_split
from gateway.errors import StoreUnavailable
from gateway.state.resp import Endpoint, RespError, connect, parse_endpoint
from gateway.state.sentinels import down_after_ms

__all__ = ["check_store", "pause_store"]


def _endpoint(url: str) -> Endpoint:
    """Where `url` (the drill's --store) points, read as state.url is (the same words for the
    same mistakes): a password holding '/', '?', '#' or '@' unencoded is refused, never taken
    for a host, port or socket path made of its end, and no message quotes a word of it."""
    if userinfo_split(url):
        raise ValueError(f"the store URL given cannot be used: {SPLIT_USERINFO}")
    try:
        return parse_endpoint(url)
    except (ValueError, OSError) as exc:
        raise ValueError(f"the store URL given cannot be used: {unreadable(url, exc)}") from None


def _why(exc: BaseException, timeout: float) -> str:
    """What went wrong, in words (a TimeoutError has none of its own)."""
    return str(exc) or (f"no answer within {timeout:g}s" if isinstance(exc, TimeoutError)
                        else type(exc).__name__)


async def pause_store(url: str, seconds: float, timeout: float = 2.0) -> None:
    """Make the redis at `url` answer no client for `seconds` (from now)."""
    try:
        ep = _endpoint(url)
    except ValueError as exc:
        raise StoreUnavailable(str(exc)) from None
    try:
        conn = await connect(ep, timeout, name="killgate-drill")
    except (OSError, RespError, TimeoutError, ValueError) as exc:
        raise StoreUnavailable(f"cannot reach the store to pause it: {_why(exc, timeout)}"
                               ) from None
    try:
        await conn.call("CLIENT", "PAUSE", str(max(1, int(seconds * 1000))), "ALL",
                        timeout=timeout)
    except TimeoutError:
        # (sent, unanswered: redis may have paused, the pausing client too; not "refused")
        raise StoreUnavailable(f"the store did not answer the pause within {timeout:g}s: it "
                               f"may be in force, and ends by itself {seconds:g}s after it "
                               "was asked") from None
    except (OSError, RespError) as exc:
        raise StoreUnavailable(f"the store refused the pause: {exc}") from None
    finally:
        conn.close()


def _hold_too_long(ep: Endpoint, hold: float, down_after: int) -> str | None:
    """Why a pause of `hold` seconds would end in a real failover (None: it would not)."""
    if hold * 1000 <= down_after / 2:
        return None
    half = down_after // 2
    most = f"{half // 1000}s" if half % 1000 == 0 else f"{half}ms"
    return (f"--hold {hold:g}s is not well below the sentinels' down-after-milliseconds for "
            f"{ep.service!r} ({down_after} ms): the pause keeps their pings waiting too, and "
            "would end in a real failover of the fleet's store, not a rehearsal of its loss; "
            f"give --hold {most} or less (half of it at most)")


async def check_store(url: str, prefix: str, instances: Collection[str],
                      timeout: float = 2.0, hold: float | None = None) -> str | None:
    """Why the redis at `url` is not one to pause for a drill of the fleet whose keys start
    with `prefix` and whose live instances are `instances` (None: it is that fleet's store).
    CLIENT PAUSE stops every client of a redis: a wrong URL must not stop someone else's.
    A state document under the right key is not enough (another deployment with the same
    prefix, staging say, has one too): the store must hold the heartbeat of one of the
    fleet's own instances, and be a primary (a replica holds both, and the fleet does not
    notice it pause). Behind Sentinel (a `redis+sentinel://` URL), a `hold` the sentinels
    would take for the master's failure (half their down-after-milliseconds or more) is
    refused too (the drill would fail the production store over), and any hold when one
    of them does not say its down-after-milliseconds (tests/test_drill_sentinel_doubt.py)."""
    key = f"{prefix}:state"
    try:
        ep = _endpoint(url)
    except ValueError as exc:
        return str(exc)
    try:
        conn = await connect(ep, timeout, name="killgate-drill")
    except (OSError, RespError, TimeoutError, ValueError) as exc:
        return f"cannot reach the store given to pause ({_why(exc, timeout)})"
    try:
        role = await conn.call("ROLE", timeout=timeout)
        found = await conn.call("EXISTS", key, timeout=timeout)
        ours = [await conn.call("HEXISTS", f"{prefix}:instances", i, timeout=timeout)
                for i in sorted(instances)[:16]]
    except (OSError, RespError, TimeoutError) as exc:
        return f"cannot read the store given to pause ({_why(exc, timeout)})"
    finally:
        conn.close()
    first = role[0] if isinstance(role, list) and role else role
    if (first.decode() if isinstance(first, bytes) else str(first)) != "master":
        return ("the store given to pause is a replica: the fleet reads and writes its "
                "primary, so pausing this one would rehearse nothing (give the primary's "
                "URL, or the Sentinel URL the fleet uses)")
    if found != 1:
        return (f"the store given to pause holds no {key!r} (in the database its URL "
                "names): it is not the fleet's store, and is not paused")
    if 1 not in ours:
        return (f"the store given to pause holds a {key!r} but the heartbeat of none of this "
                f"fleet's instances ({', '.join(sorted(instances)[:3]) or 'none listed'}"
                f"{', ...' if len(instances) > 3 else ''}): it is not the fleet's store "
                "(another deployment's?), and is not paused")
    if ep.sentinels and hold is not None:
        return await _sentinels_allow(ep, hold, timeout)
    return None


async def _sentinels_allow(ep: Endpoint, hold: float, timeout: float) -> str | None:
    """Why the sentinels may fail the store over during a pause of `hold` seconds (None:
    they would not). A sentinel that does not say its down-after-milliseconds (unreachable
    from here, an ACL that refuses `SENTINEL MASTER`) refuses it: it may watch the master
    with a shorter one. Taken for "no limit", a long hold failed the production store over
    (tests/test_drill_sentinel_doubt.py)."""
    down_after, problems = await down_after_ms(ep, timeout)
    if problems or down_after is None:
        return (f"not every sentinel said its down-after-milliseconds for {ep.service!r} "
                f"(SENTINEL MASTER: {'; '.join(problems) or 'no sentinel listed'}): one that "
                "watches the master with a shorter one could fail the fleet's store over "
                f"during a pause of {hold:g}s; let the drill reach every sentinel of the URL "
                "and run SENTINEL MASTER on it (their ACL), then drill again")
    return _hold_too_long(ep, hold, down_after)
