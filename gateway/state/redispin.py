"""The redis store's checkpoint pin: whether a trail's newest checkpoint, MAC'd under a
key a rotation removed (not genuine under the keys held), is pinned by the chain after it
to an event a held key authenticates (domain/auditpin.py's pin_walk). The chain is read in
short steps of its own (_AFTER), never in one script and never held whole. A base of
`redistrim.RedisTrim`.
"""

from __future__ import annotations

from typing import Any

from gateway.domain.audit import event_hash, genuine
from gateway.domain.auditpin import pin_walk
from gateway.state.redisaudit import RedisAudit
from gateway.state.redislink import Script
from gateway.state.replyshape import entries, shaped
from gateway.state.resp import RespConnection

__all__ = ["PIN_STEPS", "SCAN_STEP", "RedisPin"]

# The entries after ARGV[1] (exclusive, a stream id), at most ARGV[2], oldest first: the
# chain after a checkpoint MAC'd under a key no longer held, read in steps (_pin).
_AFTER = Script("""
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return {} end
return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
""")
#: the most _AFTER steps a trim walks from a checkpoint MAC'd under a retired key to an
#: event a held key authenticates (each SCAN_STEP entries; none held past them: refused)
PIN_STEPS = 40
#: entries one step reads (a few ms of redis's time; a kill waits at most that long): a
#: pin step here, a scan step in redistrim.py
SCAN_STEP = 500


class RedisPin(RedisAudit):
    """`_pin` of `RedisStore`'s audit trim (see the module docstring)."""

    async def _pin(self, ck_part: list[Any], conn: RespConnection) -> bool:
        """Whether the checkpoint read (MAC'd under a key a rotation removed: not genuine
        under the keys held) is pinned by the chain after it to an event a held key
        authenticates (auditpin.pin_walk), read in steps of its own, never held whole."""
        keys = self.audit_keys.keys() if self.audit_keys.enabled else {}
        decoded = self._decode(ck_part)
        if not keys or not decoded or genuine(decoded[0][1], keys):
            return False  # (nothing to pin: the decision checks it as ever)
        at, ck = decoded[0]
        prev: bool | str = str(ck.get("hash"))
        for _ in range(PIN_STEPS):
            got = await self._script(_AFTER, [self.k_audit], [at, str(SCAN_STEP)], conn=conn)
            chunk = self._decode(shaped("the trim's pin read", got, entries(got), "entries"))
            prev = pin_walk(str(prev), (ev for _, ev in chunk), keys)
            if isinstance(prev, bool) or len(chunk) < SCAN_STEP:
                break
            at = chunk[-1][0]
        return prev is True and ck.get("hash") == event_hash(ck)
