"""A local kill's evidence as journaled (state/localkills.py): bounded in size.

An alert's kill taken locally keeps the alert's evidence in its journal entry (signed with
the rest), so the audit event of its merge carries what the same kill through the store's
does. Bounded: the journal holds up to 256 entries within 1 MiB, and long annotations must
not refuse a kill at 3 a.m.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_EVIDENCE", "bounded", "size"]

#: an entry's evidence as JSON: MAX_ENTRIES (256) entries with it still fit in MAX_BYTES
MAX_EVIDENCE = 3 * 1024


def size(d: Any) -> int:
    return len(json.dumps(d).encode())


def bounded(evidence: dict[str, Any] | None) -> dict[str, Any] | None:
    """`evidence` as journaled: at most MAX_EVIDENCE bytes of JSON. A bigger one (long
    annotations) keeps the alert's fingerprint, status, labels and generatorURL, then its
    fingerprint alone, marked `truncated`."""
    if evidence is None or size(evidence) <= MAX_EVIDENCE:
        return evidence
    alert = evidence.get("alert")
    alert = alert if isinstance(alert, dict) else {}
    for keep in (("fingerprint", "status", "startsAt", "labels", "generatorURL"),
                 ("fingerprint",)):
        small = {"alert": {k: alert[k] for k in keep if k in alert}, "truncated": True}
        if size(small) <= MAX_EVIDENCE:
            return small
    return {"truncated": True}

