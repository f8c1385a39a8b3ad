"""The stored form of a shadow's kept disagreements (domain/shadowstats.py keeps them).

Owns `Record` (a disagreement as its JSON text, made once where it is compared, or an
object from an older instance's blob), its time (read unparsed, for the fleet's merge), its
opening for the report, and `kept_by`, what a record's bodies depend on (redaction,
max_body). Pure.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.config_shadow import DisagreementsConfig

__all__ = ["Record", "kept_by", "opened", "record_text", "record_time"]

#: a kept disagreement: its JSON text (made once, beside the loop, where it is compared: the
#: ring is published every second and read by every instance, and the text of up to `keep`
#: records of parsed answers cost seconds of the loop to write and read each time), or a
#: dict (an older instance's blob, tests)
Record = str | dict[str, Any]
_TIME = re.compile(r'\{"time":\s*"([^"\\]*)"')


def record_text(record: dict[str, Any]) -> str:
    """A disagreement's stored form (its "time" first: merges sort by it unparsed)."""
    return json.dumps(record, separators=(",", ":"))


def record_time(r: Record) -> str:
    if isinstance(r, str):
        m = _TIME.match(r)
        return m.group(1) if m else ""
    return str(r.get("time", ""))


def opened(r: Record) -> dict[str, Any] | None:
    """A kept disagreement as the report shows it (None: text that is not a record)."""
    if isinstance(r, dict):
        return r
    try:
        doc = json.loads(r)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def kept_by(cfg: DisagreementsConfig) -> tuple[Any, ...]:
    """What a kept record's bodies depend on."""
    return (cfg.max_body, tuple(cfg.redact))
