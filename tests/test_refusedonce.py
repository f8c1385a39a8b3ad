"""A stored value refused is counted once (state/refusedonce.py), the rule the redis
store's heartbeats and their addresses share; on the real store: tests/
test_heartbeat_refused_once.py, tests/test_urls_refused_once.py. Pure."""

from __future__ import annotations

import pytest

from gateway.state.refusedonce import RefusedOnce

pytestmark = pytest.mark.timeout(10)


def test_a_value_refused_is_not_judged_again_until_it_is_written_again() -> None:
    first = RefusedOnce(None)
    assert not first.still(b"a", b"forged")  # never seen: judged (and counted)
    first.add(b"a", b"forged")
    second = RefusedOnce(first)
    assert second.still(b"a", b"forged")  # as stored: not judged again
    assert not second.still(b"a", b"forged again")  # written again: judged again
    third = RefusedOnce(second)
    assert third.still(b"a", b"forged")  # (still refused: remembered read after read)
    assert not third.still(b"b", b"forged")  # another field's value is its own


def test_a_value_gone_or_a_read_that_failed() -> None:
    first = RefusedOnce(None)
    first.add(b"a", b"forged")
    RefusedOnce(first)  # a read that found nothing, or failed: never kept by the store
    assert RefusedOnce(first).still(b"a", b"forged")  # the last read's, as before
    gone = RefusedOnce(first)  # a read that completed without the value (removed)
    assert not RefusedOnce(gone).still(b"a", b"forged")  # back later: judged again
