"""Audit events and their hash chain (CONTRACT §4): building, sealing, verifying.

Pure: no I/O. An event's `hash` is SHA-256 (hex) over the canonical JSON of the event
without `hash` (`sort_keys`, `(",", ":")` separators, `ensure_ascii=False`); the first
event's `prev_hash` is 64 zeros. User-supplied strings are stored with control
characters escaped, so one event always stays one line and cannot forge another.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "GENESIS",
    "AuditDraft",
    "ChainBreak",
    "canonical",
    "clean_text",
    "event_hash",
    "seal",
    "utc_now",
    "verify_chain",
]

GENESIS = "0" * 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def clean_text(s: str, limit: int = 1024) -> str:
    """Escape control characters (CR, LF, ESC, ...) so text cannot break a log line."""
    s = s[:limit]
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), s)


def canonical(event: dict[str, Any]) -> bytes:
    body = {k: v for k, v in event.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(event: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


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
        ev: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "time": utc_now(),
            "actor": clean_text(self.actor, 256),
            "action": self.action,
            "target": {k: clean_text(v, 256) if isinstance(v, str) else v
                       for k, v in self.target.items()},
            "reason": clean_text(self.reason),
            "before": self.before,
            "after": self.after,
            "request_id": clean_text(self.request_id, 128),
            "source": clean_text(self.source, 128),
            "trace_id": clean_text(self.trace_id, 32),
        }
        if self.extra:
            ev.update(self.extra)
        return ev


def seal(event: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    out = dict(event)
    out["prev_hash"] = prev_hash
    out["hash"] = event_hash(out)
    return out


@dataclass(frozen=True, slots=True)
class ChainBreak:
    index: int  # 0 = oldest
    event_id: str
    problem: str


def verify_chain(events: Iterable[dict[str, Any]],
                 head: str | None = None) -> tuple[int, ChainBreak | None]:
    """Check events oldest first. Returns (events checked, first break or None).

    `head`, when given, is the newest hash as recorded apart from the trail, read before
    the events: it must be one of theirs, or events were cut off the end."""
    prev = GENESIS
    n = 0
    seen_head = head is None or head == GENESIS
    for i, ev in enumerate(events):
        n = i + 1
        eid = str(ev.get("id", "?"))
        if ev.get("prev_hash") != prev:
            return n, ChainBreak(i, eid, "prev_hash does not match the previous event's hash "
                                        "(an event was deleted, inserted or reordered)")
        if ev.get("hash") != event_hash(ev):
            return n, ChainBreak(i, eid, "hash does not match the event's content (edited)")
        prev = str(ev["hash"])
        seen_head = seen_head or prev == head
    if not seen_head:
        return n, ChainBreak(n, "(end)", f"the trail ends before the recorded head "
                                         f"{str(head)[:16]}…: events were cut off the end")
    return n, None
