"""A worker's series snapshot file (telemetry/groupfile.py): the round trip, and garbage
refused. Pure: no loop."""

from __future__ import annotations

import time

import pytest

from gateway.telemetry.groupfile import decode, encode
from gateway.telemetry.groupseries import capture
from gateway.telemetry.metrics import Metrics
from tests.series import new_stats, record_request

pytestmark = pytest.mark.timeout(10)


def test_snapshot_round_trip_and_garbage() -> None:
    m, stats = Metrics(), new_stats()
    m.inc("killgate_bad_requests_total", ("target",), label_names=("reason",))
    m.set("killgate_state_generation", 4)
    record_request(stats, "v2")
    raw = capture(m, stats)
    at, back = decode(encode(raw, 1))
    assert abs(at - time.monotonic()) < 5
    assert back == raw
    for junk in (b"", b"[]", b"\xff", b'{"v": 2}', b'{"v": 1, "at": 1, "values": [[1]]}',
                 b'{"v": 1, "at": "x", "values": [], "entries": [], "split": []}'):
        with pytest.raises(ValueError, match="not a worker metrics snapshot"):
            decode(junk)
