"""Audit events and their keyed hash chain (CONTRACT §4): building and sealing them.

Pure: no I/O. An event's `hash` is SHA-256 (hex) over the canonical JSON of the event
without `hash` and `mac` (`sort_keys`, `(",", ":")` separators, `ensure_ascii=False`); the
first event's `prev_hash` is 64 zeros. With an audit key, `kid` names the key (inside the
hashed content) and `mac` is HMAC-SHA256 (hex) of the `hash` with that key: without the
key nobody can re-seal an edited chain. User-supplied strings are stored with control
characters escaped, so one event always stays one line and cannot forge another. A
trail is verified by domain/auditverify.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any

from gateway.domain.auditcanon import kill_canonical
from gateway.domain.slotted import fast_init

__all__ = [
    "GENESIS",
    "AuditDraft",
    "audit_mac",
    "canonical",
    "clean_text",
    "event_hash",
    "event_json",
    "genuine",
    "mac_matches",
    "new_event_id",
    "parse_event",
    "seal",
    "seal_json",
    "utc_now",
    "uuid4_hex",
]

GENESIS = "0" * 64
# control characters, line separators, and the bidirectional controls that reorder what
# follows them on screen (a reason ending in U+202E turns the rest of a table row, a
# terminal line or the console's cell around: "Trojan Source")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


#: the last millisecond utc_now formatted, (second, millisecond), and its string
_STAMP: tuple[tuple[int, int], str] = ((-1, -1), "")
#: the last second utc_now formatted, and its string up to the seconds ("...T23:59:59")
_SECOND: tuple[int, str] = (-1, "")
#: each millisecond's tail (".999Z"): a format with a width was ~1.5k instructions
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


def utc_now() -> str:
    """Now, UTC, to the millisecond (truncated): 2026-01-31T23:59:59.999Z. Built from
    time.gmtime rather than a datetime: it runs on every admin write before the commit
    leaves, and there it is 10-15 µs cheaper on a cold CPU (the same string). The string
    of the last millisecond asked is kept: every value refused in a store flood
    (TamperLog.note, hundreds of thousands in a row) stamped itself, ~2-5 µs of formatting
    each, a quarter of the loop's time reading the flood (test_attacks_state's). And that
    of the last second: a kill stamps its flag and its event in the same second, most
    often (each full format ~10k instructions, callgrind)."""
    global _STAMP, _SECOND
    t = time.time()
    s = int(t)
    key = (s, int((t - s) * 1000))
    last = _STAMP  # (one read: another thread may replace it, never half of it)
    if last[0] == key:
        return last[1]
    second = _SECOND
    if second[0] != s:
        g = time.gmtime(s)
        second = _SECOND = (s, f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}T"
                               f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d}")
    text = second[1] + _MILLIS[key[1]]
    _STAMP = (key, text)
    return text


def clean_text(s: str, limit: int = 1024) -> str:
    """Escape control characters (CR, LF, ESC, ...) so text cannot break a log line, and
    bidirectional controls so it cannot reorder what is shown after it."""
    s = s[:limit]
    if s.isascii() and s.isprintable():  # nothing to escape (the usual case): no regex
        return s
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), s)


def _canonical_encoder() -> Any:
    """`json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)`'s own C
    encoder, made once (json.dumps builds a JSONEncoder and this encoder on every call:
    ~18k of the ~84k instructions a kill's event took, callgrind). The same bytes: the same
    encoder with the same settings; only the circular-reference check is off (an event is
    a tree; one with a cycle would raise RecursionError instead of ValueError)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # (a Python without the _json accelerator)
        return None
    return make(None, json.JSONEncoder().default, encode_basestring, None, ":", ",",
                          True, False, True)


_CANONICAL = _canonical_encoder()


def canonical(event: dict[str, Any]) -> bytes:
    return _encoded({k: v for k, v in event.items() if k not in ("hash", "mac")})


def _encoded(body: dict[str, Any]) -> bytes:
    """`body`'s canonical JSON as it is (no `hash` or `mac` in it: `canonical`'s rule); a
    kill's or an unkill's by pydantic-core's writer, the same bytes (domain/auditcanon.py)."""
    fast = kill_canonical(body)
    if fast is not None:
        return fast
    if _CANONICAL is not None:
        return "".join(_CANONICAL(body, 0)).encode()
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_json(event: dict[str, Any]) -> bytes:
    """A sealed event as the store keeps it: its JSON, the bytes its hash is over
    (`canonical`) with its hash and MAC after them (`seal_json`). Written by the hash's own
    encoder, never another writer: pydantic-core's (impkill2's) names a None key "None"
    and an infinite one "inf" where the hash's says "null" and "Infinity", and a genuine
    event read back failed its hash (test_commit_encoding.py)."""
    return _stored(canonical(event), event)


def _stored(canon: bytes, event: dict[str, Any]) -> bytes:
    """`canon` (the canonical bytes of `event`, hash and MAC aside) with them appended."""
    tail = "".join(f',"{k}":{encode_basestring(event[k])}' for k in ("hash", "mac")
                   if k in event).encode()
    if canon == b"{}":
        return b"{" + tail[1:] + b"}" if tail else canon
    return canon[:-1] + tail + b"}"


def new_event_id() -> str:
    """An event id drawn before its event is made (a break-glass write's: its process keeps
    it until the use is counted, admin/glassjournal.py); the event takes it as `extra`."""
    return _new_id()


def uuid4_hex() -> str:
    """`uuid.uuid4().hex`, as `_new_id` makes it: an admin write's request id and its
    Idempotency-Key claim's holder are drawn before its commit leaves (a UUID object each
    was ~15k instructions of the ~570k a kill's committer spent before its EVALSHA)."""
    return _new_id()


def _new_id() -> str:
    """A random (version 4) UUID's hex, as `uuid.uuid4().hex` (the same 122 random bits,
    version and variant bits), without building a UUID object (~15k instructions, 1k)."""
    b = bytearray(os.urandom(16))
    b[6] = b[6] & 0x0F | 0x40
    b[8] = b[8] & 0x3F | 0x80
    return b.hex()


def event_hash(event: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


@fast_init
@dataclass(frozen=True, slots=True)
class AuditDraft:
    """An event before it is placed in the chain (no id, prev_hash or hash yet)."""

    actor: str
    action: str
    target: dict[str, Any]
    reason: str
    before: Any = None
    after: Any = None
    request_id: str = ""
    source: str = ""
    extra: dict[str, Any] | None = None
    trace_id: str = ""  # the W3C trace id of the call that made it ("" when none)

    def as_event(self) -> dict[str, Any]:
        # (a text with nothing to escape and within its bound is taken as it is, without
        # a call: clean_text's own first test; ten calls were ~5k instructions of a kill's)
        actor, reason, rid, source, trace = (self.actor, self.reason, self.request_id,
                                             self.source, self.trace_id)
        ev: dict[str, Any] = {
            "id": _new_id(),
            "time": utc_now(),
            "actor": actor if len(actor) <= 256 and actor.isascii() and actor.isprintable()
            else clean_text(actor, 256),
            "action": self.action,
            "target": {k: clean_text(v, 256) if isinstance(v, str) else v
                       for k, v in self.target.items()},
            "reason": reason if len(reason) <= 1024 and reason.isascii()
            and reason.isprintable() else clean_text(reason),
            "before": self.before,
            "after": self.after,
            "request_id": rid if len(rid) <= 128 and rid.isascii() and rid.isprintable()
            else clean_text(rid, 128),
            "source": source if len(source) <= 128 and source.isascii()
            and source.isprintable() else clean_text(source, 128),
            "trace_id": trace if len(trace) <= 32 and trace.isascii() and trace.isprintable()
            else clean_text(trace, 32),
        }
        if self.extra:
            ev.update(self.extra)
        return ev


def parse_event(raw: bytes | str) -> dict[str, Any] | None:
    """An event as stored (one JSON object), or None when it is not one (also when nested
    too deeply to parse)."""
    try:
        ev = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return ev if isinstance(ev, dict) else None


@lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with `secret` and fed nothing: each MAC is a copy of it. A new
    one (hmac.new) looks the digest up in OpenSSL and hashes the key's two pads every time:
    ~11k of a MAC's ~28k instructions, callgrind, and every admin write seals an event
    before its commit leaves. Never updated itself (only its copies are)."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def audit_mac(secret: bytes, hash_: str) -> str:
    h = _keyed(secret).copy()
    h.update(hash_.encode("ascii", "replace"))
    return h.hexdigest()


def mac_matches(secret: bytes, ev: dict[str, Any]) -> bool:
    """Whether `ev`'s `mac` is the MAC of its `hash` under `secret` (in constant time; a
    `mac` that is not a string, or not ASCII, simply does not match)."""
    mac = ev.get("mac")
    return isinstance(mac, str) and hmac.compare_digest(
        audit_mac(secret, str(ev.get("hash"))).encode(), mac.encode("utf-8", "replace"))


def genuine(ev: dict[str, Any], keys: Mapping[str, bytes]) -> bool:
    """Whether `ev` was written by a holder of one of `keys` (key id -> secret): its hash is
    its content's, and its MAC is that hash's under the key it names. (What the chain
    around it says is `verify_trail`'s.)"""
    kid = ev.get("kid")
    return (isinstance(kid, str) and kid in keys and ev.get("hash") == event_hash(ev)
            and mac_matches(keys[kid], ev))


def seal(event: dict[str, Any], prev_hash: str,
         key: tuple[str, bytes] | None = None) -> dict[str, Any]:
    """The event placed after `prev_hash`; with `key` (key id, secret) also keyed."""
    return seal_json(event, prev_hash, key)[0]


def seal_json(event: dict[str, Any], prev_hash: str,
              key: tuple[str, bytes] | None = None) -> tuple[dict[str, Any], bytes]:
    """`seal`'s event and its JSON as stored (`event_json`), from one serialisation: the
    canonical bytes the hash is over, its hash and MAC appended. The verifier hashes the
    stored event as it parses it: the same encoder both ways, whatever the values."""
    out = dict(event)
    out.pop("mac", None)
    out.pop("hash", None)  # (an event sealed again: its old hash is not content)
    out["prev_hash"] = prev_hash
    if key is not None:
        out["kid"] = key[0]
    canon = _encoded(out)
    out["hash"] = digest = hashlib.sha256(canon).hexdigest()
    # (the tail `_stored` appends, written directly: both are hex digits, nothing to escape)
    if key is None:
        tail = f',"hash":"{digest}"}}'
    else:
        out["mac"] = mac = audit_mac(key[1], digest)
        tail = f',"hash":"{digest}","mac":"{mac}"}}'
    if canon == b"{}":  # (never: an event has a prev_hash)
        return out, _stored(canon, out)
    return out, canon[:-1] + tail.encode()
