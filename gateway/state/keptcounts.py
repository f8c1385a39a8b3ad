"""Analysis counts refused here but left in the store: another key's.

Owns `KeptCounts`, per counts hash (`<p>:stats:<route>`): the entries a read refused for a
key id none of ours (fleetscan.prunable's test: a wrong-key pod, an instance mid-rotation,
a pod replaced before a rotation's step 2), left in the store rather than removed as a
forgery is. Such counts are genuine as far as this instance can tell, and they are the
evidence: the holder of that key reads them for its canary analysis, and a misconfigured
pod shows as refused counts (`store.verification`) only while they are there. Removed by
every reader, they vanished at each tick, flood or not, and the reader counted each rewrite.

Each is counted once (refused, `unknown_key_id` or `retired`), not judged again while it
stays as read (its SHA-1), and removed once unchanged for KEPT_FOR seconds of this
instance's own clock (a live instance rewrites its counts at every tick: one unchanged for
that long is a left-over; judged by what this instance saw, never by a stamp in the value
nor a clock another host keeps). At most MAX_KEPT per hash: a hash holding more entries of
other keys than a fleet has instances is a flood (forgeries naming made-up key ids), and
the rest is removed as before. An entry not met for 2 x KEPT_FOR is forgotten (a flooded
hash is read in steps: each entry is met once per pass of the cursor). Counts written
again under a key id the fleet retired are no left-over of the rotation (`rewritten`): an
instance still signing with the old key, or a forgery, counted as tampering.
"""

from __future__ import annotations

from gateway.state.beatorder import MAX_INSTANCES
from gateway.state.signing import MAGIC, Keyring

__all__ = ["KEPT_FOR", "MAX_KEPT", "KeptCounts", "rewritten"]

#: seconds an entry of another key may stay unchanged before it is removed (a live
#: instance's counts change at every analysis tick, seconds apart)
KEPT_FOR = 600.0
#: entries kept per counts hash, at most (no fleet has more instances)
MAX_KEPT = MAX_INSTANCES


class KeptCounts:
    __slots__ = ("_seen",)

    def __init__(self) -> None:
        #: field -> (SHA-1 of the value as read, when first read so, when last met)
        self._seen: dict[bytes, tuple[str, float, float]] = {}

    def holds(self, field: bytes) -> bool:
        return field in self._seen

    def still(self, field: bytes, digest: str, now: float) -> bool | None:
        """For a field held: True while its value is as kept (not judged, nor counted,
        again); False once unchanged for KEPT_FOR (remove it); None when written again
        since (judge it anew)."""
        got = self._seen.get(field)
        if got is None or got[0] != digest:
            self._seen.pop(field, None)
            return None
        if now - got[1] >= KEPT_FOR:
            del self._seen[field]
            return False
        self._seen[field] = (digest, got[1], now)
        return True

    def keep(self, field: bytes, digest: str, now: float) -> bool:
        """Keep a value refused for another key's id; False when MAX_KEPT are kept already
        (remove it)."""
        if len(self._seen) >= MAX_KEPT:
            self._forget(now)
            if len(self._seen) >= MAX_KEPT:
                return False
        self._seen[field] = (digest, now, now)
        return True

    def _forget(self, now: float) -> None:
        for field in [f for f, (_, _, met) in self._seen.items() if now - met >= 2 * KEPT_FOR]:
            del self._seen[field]

    def only(self, fields: set[bytes]) -> None:
        """After a read of the whole hash: forget what it no longer holds."""
        for field in [f for f in self._seen if f not in fields]:
            del self._seen[field]


def rewritten(keys: Keyring, value: bytes) -> str | None:
    """Why counts kept here and written again since (`value`) are no left-over, or None:
    sealed with a key id the fleet retired in a rotation (retiredkeys.py), which nothing
    genuine writes once the rotation is done: a left-over never changes."""
    if not value.startswith(MAGIC):
        return None
    kid = value[len(MAGIC):].split(b" ", 1)[0].decode("ascii", "replace")
    if kid not in keys.retired:
        return None
    return (f"counts signed with the key id {kid!r}, retired in a key rotation, written "
            "again since this instance first read them (an instance still signing with the "
            "old key, a replay, or a forgery): not a left-over of the rotation")
