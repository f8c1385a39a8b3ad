"""`killgate status`'s first line reads as words, not as Python: the store was printed
`connected=True`/`connected=False`, an unreachable store easy to miss at 3 a.m."""

from __future__ import annotations

import pytest

from gateway.cli.admin import _status_text

pytestmark = pytest.mark.timeout(10)


def _status(connected: object) -> dict[str, object]:
    return {"instance": "gw-1", "generation": 7, "config": {"digest": "sha256:" + "0" * 64},
            "store": {"backend": "redis", "connected": connected, "staleness_ms": 12,
                      "policy": "fail_static"}}


@pytest.mark.parametrize(("connected", "said"), [
    (True, "store redis reachable, state 12 ms old, on_unavailable fail_static"),
    (False, "store redis UNREACHABLE, state 12 ms old"),
    (None, "store redis reach unknown"),
])
def test_the_store_line_says_whether_it_is_reachable(connected: object, said: str) -> None:
    first = _status_text(_status(connected)).splitlines()[0]
    assert said in first and "connected=" not in first and "True" not in first, first
