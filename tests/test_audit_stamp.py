"""audit.utc_now keeps the string of the last millisecond it formatted (a flood of refused
store values stamps each refusal, TamperLog.note): every call still says its own
millisecond, truncated, as a datetime would."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.domain import audit


def _reference(t: float) -> str:
    s = int(t)
    d = dt.datetime.fromtimestamp(s, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{int((t - s) * 1000):03d}Z"


def test_each_call_says_its_own_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    base = 1798761599.0  # 2026-12-31T23:59:59Z
    times = [base + 0.9991, base + 0.9994, base + 0.9999, base + 1.0002, base + 1.0002,
             base + 1.0011, base + 0.9994, base + 61.5, base + 61.5004, base + 86401.0]
    it = iter(times)
    monkeypatch.setattr(audit.time, "time", lambda: next(it))
    got = [audit.utc_now() for _ in times]
    assert got == [_reference(t) for t in times]
    assert got[0] == "2026-12-31T23:59:59.999Z" and got[3] == "2027-01-01T00:00:00.000Z"
    assert got[5] == "2027-01-01T00:00:00.001Z" and got[6] == "2026-12-31T23:59:59.999Z"
