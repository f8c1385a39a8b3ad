"""Finding the Redis master through the sentinels (`redis+sentinel://` URLs).

Owns asking the sentinels (all at once; done when more than half name one address), the
order in which the nodes they name are tried (the majority's first, then the others as they
answered; the first that says it is a master, ROLE, wins), and `master_named`, which the
store asks every few seconds to follow a failover its connections did not see (whether to
drop them: `led_elsewhere`, pure). A sentinel
out of date (cut off from the others, or not yet told of a failover) neither stops a
connect nor is believed over the others.

A name that resolves to several addresses of one family (a Kubernetes headless Service in
front of three sentinels, the shipped manifests' way) is as many sentinels: asked by name,
it would be one, whichever the resolver put first, believed alone as "more than half".
Builds on resp.py's connections.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.state.resp import (
    Endpoint,
    OnMessage,
    RespConnection,
    RespError,
    _direct,
    _open,
)

__all__ = ["down_after_ms", "led_elsewhere", "master_named", "sentinel_addresses",
           "to_master"]

Sentinel = tuple[str, int]
#: host, port -> getaddrinfo's answer (the event loop's, a fake in tests)
Resolve = Callable[[str, int], Awaitable[list[tuple[Any, ...]]]]


async def _getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


_resolve: Resolve = _getaddrinfo
#: a name's last expansion to several addresses: kept for when its resolution fails or is
#: slow (then asked by name it would be one sentinel again, believed alone)
_expanded: dict[Sentinel, list[Sentinel]] = {}


async def sentinel_addresses(ep: Endpoint, timeout: float) -> list[Sentinel]:
    """The sentinels to ask: each listed address, a name that resolves to several addresses
    of the family the system would connect with (its first answer's) as each of them. A
    name that does not resolve (now, or within `timeout`) stands for the addresses it last
    resolved to, if several; else it stays as it is: asking it says why."""
    async def expand(host: str, port: int) -> list[Sentinel]:
        try:
            ipaddress.ip_address(host)
            return [(host, port)]
        except ValueError:
            pass
        try:
            async with asyncio.timeout(timeout):
                infos = await _resolve(host, port)
        except (OSError, TimeoutError):
            infos = []
        if not infos:
            return _expanded.get((host, port), [(host, port)])
        family = infos[0][0]
        found = list(dict.fromkeys(str(i[4][0]) for i in infos if i[0] == family))
        if len(found) < 2:
            _expanded.pop((host, port), None)
            return [(host, port)]
        _expanded[(host, port)] = out = [(a, port) for a in found]
        return out

    lists = await asyncio.gather(*(expand(h, p) for h, p in ep.sentinels))
    return list(dict.fromkeys(a for one in lists for a in one))


async def _asked(host: str, port: int, ep: Endpoint, timeout: float, *cmd: str) -> Any:
    """The answer of the sentinel at host:port to one command."""
    async with asyncio.timeout(timeout):
        s = await _open(host, port, None, None, None)
    try:
        if ep.sentinel_password:
            try:
                await s.call("AUTH", ep.sentinel_password, timeout=timeout)
            except RespError as exc:
                # the URL's password is the master's; a sentinel without one of its own
                # (Sentinel's requirepass is optional) refuses it, and answers without
                if "without any password configured" not in str(exc):
                    raise
        return await s.call(*cmd, timeout=timeout)
    finally:
        await s.aclose()


async def _named_master(host: str, port: int, ep: Endpoint, timeout: float) -> tuple[str, int]:
    """The master's address as the sentinel at host:port names it."""
    addr = await _asked(host, port, ep, timeout, "SENTINEL", "get-master-addr-by-name",
                        ep.service or "")
    if not addr:
        raise ConnectionError(f"does not know {ep.service!r}")
    try:  # (a sentinel's answer is not trusted to be an address: one hostile or broken
        # sentinel must not fail the connect the others agree on)
        host_b, port_b = addr
        named = host_b.decode("ascii"), int(port_b)
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        raise ConnectionError(f"named no address: {str(addr)[:80]}") from None
    if not 0 < named[1] < 65536 or not named[0]:
        raise ConnectionError(f"named no address: {str(addr)[:80]}")
    return named


async def _ask_all(ep: Endpoint, timeout: float,
                   sentinels: list[Sentinel]) -> list[tuple[str, int] | str]:
    """The sentinels' answers, asked at once: the master's address, or why not; done as
    soon as more than half name one address (a frozen sentinel costs nothing then)."""
    async def ask(host: str, port: int) -> tuple[str, int] | str:
        try:
            return await _named_master(host, port, ep, timeout)
        except (OSError, RespError, TimeoutError) as exc:
            return f"{host}:{port}: {exc or type(exc).__name__}"

    tasks = [asyncio.ensure_future(ask(h, p)) for h, p in sentinels]
    answers: list[tuple[str, int] | str] = []
    try:
        for next_answer in asyncio.as_completed(tasks):
            answers.append(await next_answer)
            if _majority(answers, len(tasks)) is not None:
                break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return answers


def _majority(answers: list[tuple[str, int] | str], listed: int) -> tuple[str, int] | None:
    counts = collections.Counter(a for a in answers if isinstance(a, tuple))
    if not counts:
        return None
    addr, n = counts.most_common(1)[0]
    return addr if 2 * n > listed else None


async def _answers(ep: Endpoint, timeout: float) -> tuple[list[tuple[str, int] | str], int]:
    """Every sentinel's answer, and how many were asked. When no address a name stood for
    answered at all, the sentinels are asked again as written: the addresses are of one
    family (the resolver's first), and a sentinel listening on the other one only (a
    dual-stack name, a sentinel bound to 0.0.0.0) is reached by name, whose connect tries
    every address, as before names were expanded."""
    sentinels = await sentinel_addresses(ep, timeout)
    answers = await _ask_all(ep, timeout, sentinels)
    if sentinels != list(ep.sentinels) and not any(isinstance(a, tuple) for a in answers):
        sentinels = list(ep.sentinels)
        answers += await _ask_all(ep, timeout, sentinels)
    return answers, len(sentinels)


def _down_after(got: Any) -> int | None:
    """A `SENTINEL MASTER` answer's down-after-milliseconds (None: it holds none that is a
    number: a sentinel's answer is not trusted to be one; a forged 5,000-digit value or a
    nested array raised out of the drill's check, and killed it with a traceback)."""
    if isinstance(got, list):
        got = dict(zip(got[::2], got[1::2], strict=False)) \
            if all(isinstance(k, bytes) for k in got[::2]) else {}
    raw = got.get(b"down-after-milliseconds") if isinstance(got, dict) else None  # (RESP3)
    if not isinstance(raw, bytes) or not raw.isdigit() or len(raw) > 12:
        return None
    return int(raw)


async def down_after_ms(ep: Endpoint, timeout: float) -> tuple[int | None, list[str]]:
    """The shortest `down-after-milliseconds` of the service among the sentinels that
    answer: a master that answers none of their pings for that long is failed over (a
    store-loss drill's pause must stay well below it); and why each sentinel that did not
    say did not ("host:port: ..."). None: none of them said."""
    async def ask(host: str, port: int) -> int | str:
        try:
            got = await _asked(host, port, ep, timeout, "SENTINEL", "MASTER", ep.service or "")
        except (OSError, RespError, TimeoutError, ConnectionError) as exc:
            return f"{host}:{port}: {str(exc) or type(exc).__name__}"
        ms = _down_after(got)
        return f"{host}:{port}: answered no down-after-milliseconds" if ms is None else ms

    sentinels = await sentinel_addresses(ep, timeout)
    said = await asyncio.gather(*(ask(h, p) for h, p in sentinels))
    numbers = [ms for ms in said if isinstance(ms, int)]
    return (min(numbers) if numbers else None), [s for s in said if isinstance(s, str)]


async def master_named(ep: Endpoint, timeout: float) -> tuple[str, int] | None:
    """The master's address as more than half of the sentinels name it; None when none
    is (some down, or disagreeing)."""
    answers, listed = await _answers(ep, timeout)
    return _majority(answers, listed)


def led_elsewhere(named: tuple[str, int] | None, held: set[tuple[str, int]]) -> str | None:
    """Why connections leading to `held` must be dropped: most sentinels name another
    master (`named`); None to keep them. A master the sentinels lost while we still reach
    it (a partition on their side) is never told to step down: it answers every read and
    takes every write, and an instance left on it would never hear a kill made since on
    the new one, nor raise its staleness alarm. No majority (sentinels down): None."""
    if named is None or held <= {named}:
        return None
    was = ", ".join(f"{h}:{p}" for h, p in sorted(held))
    return f"the sentinels name {named[0]}:{named[1]} as the master, not {was}: reconnecting"


async def to_master(ep: Endpoint, timeout: float, name: str,
                    on_message: OnMessage | None) -> RespConnection:
    """Ask every sentinel; try the node most of them name first, then each other node named
    (as they answered), and take the first that says it is a master (ROLE). A
    sentinel out of date (cut off from the others, or not yet told of a failover) that
    names a node that is gone, a replica, or an old master the others replaced, neither
    stops us nor is believed over them."""
    answers, listed = await _answers(ep, timeout)
    first = _majority(answers, listed)
    named = [a for a in answers if isinstance(a, tuple)]
    problems = [a for a in answers if isinstance(a, str)]
    for mhost, mport in dict.fromkeys([first, *named] if first else named):
        try:
            conn = await _direct(mhost, mport, ep, timeout, name, on_message, master=True)
            conn.address = (mhost, mport)
            return conn
        except (OSError, RespError, TimeoutError) as exc:
            # (a timeout's text is empty: name it, or the message ends in ": ")
            problems.append(f"{mhost}:{mport}: {str(exc) or type(exc).__name__}")
    raise ConnectionError(("no node the sentinels named answered as the master (a failover "
                           "may be under way): " if named else "no sentinel named a master: ")
                          + "; ".join(problems))
