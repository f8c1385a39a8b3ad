"""A write that keeps losing its compare-and-set gives up after 10 tries (not 2 s) only
when this instance refused, meanwhile, a value that write compares and sets: the state
document, the generation key, the audit head key (a forger, whom patience won't outlast;
state/writes.py). Found by review revmerge34: every refused value counted, so a heartbeat
or count a misconfigured peer (another key) or anyone writing to Redis adds at any time
cut a burst's writes short at 10 tries, answered 409 blaming "someone writing to Redis
without the key" for the state, which nobody forged. Real TamperLog (no socket here)."""

from __future__ import annotations

import pytest

from gateway.state.tamper import CONTENDED, KINDS, TamperLog, contended
from gateway.telemetry.metrics import Metrics

pytestmark = pytest.mark.timeout(10)


def test_only_refused_state_generation_or_audit_head_values_shorten_a_write() -> None:
    tamper = TamperLog(Metrics())
    for kind in ("heartbeat", "stats", "idempotency", "ack", "push", "snapshot"):
        tamper.note(kind, "its signature does not match its content", "bad_signature")
    assert contended(tamper.counts) == 0  # (failed before: 6, and the write gave up)
    for n, kind in enumerate(CONTENDED, 1):
        tamper.note(kind, "its signature does not match its content", "bad_signature")
        assert contended(tamper.counts) == n
    assert set(CONTENDED) <= set(KINDS)
