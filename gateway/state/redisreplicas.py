"""How many replicas the redis primary this instance writes to holds in sync (min_replicas).

Owns `RedisReplicas`, a base of RedisStore: `replicas()` (store.Replicas: a count, or why
it is unknown), asked by the sync loop at its heartbeat's pace (durability.py), never on a
request's path: one command on the heartbeat's connection. `INFO replication`: the
replicas `state=online` whose last ack is at most MAX_LAG s old (redis's own count of good
replicas for min-replicas-to-write); or, for a redis user that may not run INFO, `ROLE`:
the replicas it lists whose acked offset holds what the primary held MAX_LAG s ago (it
says no lag, and lists a stalled replica until repl-timeout, 60 s). A user that may run
neither (NOPERM), or a server without them (renamed, a proxy), makes the count unknown,
never an error: a command refused is asked again only every REFUSED_RETRY s (each refusal
is an ACL LOG entry on the server).
Not `WAIT 0 0`: it counts the replicas that have acked this connection's last write, which
none has yet right after a heartbeat (they ack once a second), and 0 is a true answer then.
"""

from __future__ import annotations

import re
import time
from collections import deque
from typing import Any

from gateway.errors import StateError
from gateway.state.redislink import RedisLink, odd_reply
from gateway.state.store import Replicas

__all__ = ["MAX_LAG", "REFUSED_RETRY", "RedisReplicas", "from_info", "from_role", "role_offset"]

#: a replica whose last ack is older than this (s) is not counted (redis's default
#: min-replicas-max-lag: replicas ack every second; a link cut without a reset stays
#: `online` on the primary until repl-timeout, 60 s, while WAIT already gets no ack)
MAX_LAG = 10

#: how long (s) a command the store refused is not asked again
REFUSED_RETRY = 300.0

_ASKED: dict[str, tuple[str, ...]] = {"INFO": ("INFO", "replication"), "ROLE": ("ROLE",)}
_REPLICA_LINE = re.compile(r"slave\d+")


class _Refused(Exception):
    """An error reply to INFO or ROLE (NOPERM, an unknown command): another is tried."""


def from_info(reply: Any) -> Replicas:
    """`INFO replication`'s answer: its replicas online and acked within MAX_LAG s (one
    without `lag`, before redis 2.8, counts when online)."""
    if not isinstance(reply, bytes):
        return Replicas(None, odd_reply("INFO replication", reply, "a text"))
    fields = dict(line.split(":", 1) for line in reply.decode("utf-8", "replace").splitlines()
                  if ":" in line)
    role = fields.get("role", "").strip()
    if role != "master":
        return Replicas(None, _not_primary(role or "unknown"))
    n = 0
    for name, value in fields.items():
        if not _REPLICA_LINE.fullmatch(name):
            continue
        kv = dict(part.split("=", 1) for part in value.strip().split(",") if "=" in part)
        lag = kv.get("lag", "0")
        if kv.get("state") == "online" and lag.isdigit() and int(lag) <= MAX_LAG:
            n += 1
    return Replicas(n)


def from_role(reply: Any, held: int | None = None) -> Replicas:
    """`ROLE`'s answer: the replicas a primary lists, those whose acked offset is at least
    `held` (the primary's offset MAX_LAG s ago) when given."""
    if not (isinstance(reply, list) and reply and isinstance(reply[0], bytes)):
        return Replicas(None, odd_reply("ROLE", reply, "a role and its replication"))
    role = reply[0].decode("utf-8", "replace")
    if role != "master":
        return Replicas(None, _not_primary(role))
    if len(reply) < 3 or not isinstance(reply[2], list):
        return Replicas(None, odd_reply("ROLE", reply, "a primary's offset and replicas"))
    if held is None:
        return Replicas(len(reply[2]))
    acked = [_offset(r[2]) if isinstance(r, list) and len(r) >= 3 else None for r in reply[2]]
    return Replicas(sum(1 for a in acked if a is not None and a >= held))


def role_offset(reply: Any) -> int | None:
    """The primary's replication offset in a ROLE answer (None: not a primary's)."""
    if isinstance(reply, list) and len(reply) >= 2 and reply[0] == b"master":
        return _offset(reply[1])
    return None


def _offset(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _not_primary(role: str) -> str:
    return (f"the redis this instance writes to says role:{role[:40]}, not the primary (a "
            "failover under way? the next call that meets READONLY reconnects)")


#: redis 7.2's NOPERM names the ACL user ("User alice has no permissions ..."): the words
#: reach /v1/status, the log and the console, which never name the store's credentials
_USER = re.compile(r"\bUser \S+ ")


class RedisReplicas(RedisLink):
    #: command -> (when it was refused, monotonic s; the refusal's words)
    _refused_cmds: dict[str, tuple[float, str]] | None = None
    #: (monotonic s, the primary's offset) as ROLE said it, the oldest MAX_LAG s back
    _role_offsets: deque[tuple[float, int]] | None = None

    async def replicas(self) -> Replicas:
        """The primary's replicas in sync, by the first of INFO and ROLE this redis user
        may run (one command; none while both were refused within REFUSED_RETRY). Never
        raises: a store that does not answer makes the count unknown (the sync loop's own
        calls find it out)."""
        refused = self._refused_cmds
        if refused is None:
            refused = self._refused_cmds = {}
        now = time.monotonic()
        for name, args in _ASKED.items():
            before = refused.get(name)
            if before is not None and now - before[0] < REFUSED_RETRY:
                continue
            try:
                reply = await self._call(*args, refused=_Refused)
            except _Refused as exc:
                refused[name] = (now, _USER.sub("the redis user ", str(exc))[:200])
                continue
            except StateError as exc:
                return Replicas(None, f"the store did not answer {name}: {exc}")
            refused.pop(name, None)
            return from_info(reply) if name == "INFO" else self._from_role(reply, now)
        said = "; ".join(f"{name}: {why}" for name, (_, why) in sorted(refused.items()))
        return Replicas(None, "the redis user may run neither INFO nor ROLE (" + said +
                        "): grant it +info (or +role) to see the primary's replicas; "
                        f"asked again every {REFUSED_RETRY:g} s")

    def _from_role(self, reply: Any, now: float) -> Replicas:
        """ROLE's count: a replica is in sync when it acked what the primary held MAX_LAG s
        ago (INFO's lag; until this process has seen that long, every replica listed)."""
        seen = self._role_offsets
        if seen is None:
            seen = self._role_offsets = deque()
        offset = role_offset(reply)
        if offset is None or (seen and offset < seen[-1][1]):
            seen.clear()  # (not a primary, or its offset went back: its history starts anew)
        else:
            seen.append((now, offset))
        while len(seen) > 1 and seen[1][0] <= now - MAX_LAG:
            seen.popleft()  # (the newest offset at least MAX_LAG s old is the one kept)
        held = seen[0][1] if seen and seen[0][0] <= now - MAX_LAG else None
        return from_role(reply, held)
