"""Opening the redis store's heartbeat and address records: what a record says.

Owns `BeatRecords`, the base of redisbeats.RedisBeats (which judges replays and the
clock): a heartbeat (or an ack pushed on the acks channel) and an instance's addresses
verified against the state keys, one over MAX_ACK_BYTES refused unread; a record that
does not verify is reported (`on_unverified`) and never used; a refused heartbeat's key id
none of ours noted (`other_key_at`). No redis calls of its own: it reads what it is given.
"""
from __future__ import annotations

import json
import time
from typing import Any

from gateway.buildid import said_build
from gateway.state.beatorder import Place, beat_current, split_time
from gateway.state.redislink import RedisLink
from gateway.state.redisstats import turn
from gateway.state.refusedonce import RefusedOnce
from gateway.state.signing import Unverified, cause_of
from gateway.state.store import Ack

__all__ = ["MAX_ACK_BYTES", "BeatRecords", "signed_time"]

#: a heartbeat longer than this is refused unread. A real one is a few hundred bytes (key
#: id, MAC, generation, time, config digest, a host name of at most 64); the acks channel
#: is read on the loop the data plane runs on, and a flood of 8 MB forged acks naming the
#: real key id had their MACs computed there: a serial client's p99 went from 4 to 20 ms
MAX_ACK_BYTES = 4096


def signed_time(record: bytes) -> tuple[int, Place | None] | None:
    """A verified heartbeat's signed time (ms) and place (None when unread)."""
    parts = record.split(b" ", 4)
    return split_time(parts[3].decode("ascii", "replace")) if len(parts) > 3 else None


def _unreported(kind: str, problem: str, which: str | None, cause: str = "other") -> None:
    return None


class BeatRecords(RedisLink):
    #: when (monotonic) the newest heartbeat refused for a key id we do not hold was
    #: written, by the store's stamp (FleetStore's: what KEY UNCONFIRMED is judged by)
    other_key_at: float | None = None
    #: the addresses the last fleet read refused (replaced at each read)
    _refused_urls: RefusedOnce | None = None
    #: the signed time and place of each live instance's heartbeat the last fleet read
    #: read: its addresses record names the one it was written with (`beat`)
    _beat_walls: dict[str, str] = {}

    def _open_ack(self, raw: bytes, kind: str | None, field: bytes | None = None) -> Ack | None:
        """A signed heartbeat, or None (reported as `kind`; None: not reported). One over
        MAX_ACK_BYTES is refused unread (see there)."""
        report = self.on_unverified if kind is not None else _unreported
        kind = kind or ""
        if len(raw) > MAX_ACK_BYTES:
            report(kind, f"{len(raw)} bytes, over the {MAX_ACK_BYTES}-byte limit (not read)",
                   None)
            return None
        try:
            kid, mac, gen, wall, config, inst = raw.decode().split(" ", 5)
            if not gen.isdigit() or (field is not None and field.decode() != inst):
                raise Unverified("a malformed heartbeat")
            if self.keys.enabled:
                body = f"{inst}\x00{gen}\x00{wall}\x00{config}".encode()
                if self.keys.check(b"ack", body, kid, mac) == "previous":
                    report(kind, "", "previous")
        except (ValueError, UnicodeDecodeError) as exc:
            report(kind, str(exc), None, cause_of(exc))
            return None
        return Ack(inst, int(gen), "" if config == "-" else config)

    async def _read_urls(self, flat: list[bytes], out: dict[str, dict[str, Any]]) -> None:
        """Add to `out` (the live instances) the addresses of `flat` (the urls hash, read
        whole) that verify. A value refused is counted once, not again at every fleet read
        while it stays as stored (one forged entry beside a live instance's heartbeat grew
        the refused count without bound: every /v1/fleet, receipt and drill read it);
        written again, it is another value, counted again."""
        refused = RefusedOnce(self._refused_urls)
        for i in range(0, len(flat), 2):
            await turn(i)
            field, raw = flat[i], flat[i + 1]
            if refused.still(field, raw):
                continue  # (still refused: not judged, nor counted, again)
            name = field.decode(errors="replace")
            if name in out:
                urls = self._open_urls(name, raw)
                if urls is None:
                    refused.add(field, raw)
                else:
                    # (key ids only from the record written with the heartbeat read: an
                    # older one put back said the keys it held then, review revtrail)
                    # (its build likewise where the records are signed with their beat)
                    if not beat_current(urls.pop("beat", None), self._beat_walls.get(name)):
                        urls.pop("key_ids", None)
                        if self.keys.enabled:
                            urls.pop("build", None)
                    out[name].update(urls)
        self._refused_urls = refused

    def _other_key(self, record: bytes, age: float, live: bool = False) -> None:
        """A stored heartbeat written `age` seconds ago (the store's stamp) was refused:
        when its key id is none of ours, note when it was written (`other_key_at`). By its
        stamp, not when read: a dead instance's heartbeat, read until 10 leases old by an
        instance that started since, said its key unconfirmed for a lease after each start
        though nothing live signed with another key. A retired key's counts only when
        `live` (written long after the retirement: retiredkeys.after_retirement), as its
        pushed ack does: an instance signing with the old key now (a pod rolled back to the
        old Secret; or this one is the odd one out), not a left-over of the rotation."""
        kid = record.split(b" ", 1)[0].decode("ascii", "replace")
        if self.keys.enabled and not self.keys.holds(kid) \
                and (live or kid not in self.keys.retired):
            at = time.monotonic() - max(age, 0.0)
            self.other_key_at = max(at, self.other_key_at or at)

    def _open_urls(self, instance: str, raw: bytes) -> dict[str, Any] | None:
        """An instance's signed addresses, the key ids it trusts (a list) and the build it
        runs (buildid.py; left out when not hex) (None when they do not verify, or are
        longer than a heartbeat may be: not read; reported)."""
        if len(raw) > MAX_ACK_BYTES:
            self.on_unverified("heartbeat", f"addresses: {len(raw)} bytes, over the "
                                            f"{MAX_ACK_BYTES}-byte limit (not read)", None)
            return None
        try:
            kid, mac, addr = raw.decode().split(" ", 2)
            if self.keys.enabled:
                self.keys.check(b"urls", f"{instance}\x00{addr}".encode(), kid, mac)
            got = json.loads(addr)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.on_unverified("heartbeat", f"addresses: {exc}", None, cause_of(exc))
            return None
        if not isinstance(got, dict):
            return {}
        out = {k: v.split() if k == "key_ids" else v for k, v in got.items()
               if k in ("data", "admin", "key_ids", "beat") and isinstance(v, str)}
        if (build := said_build(got.get("build"))) is not None:
            out["build"] = build
        return out
