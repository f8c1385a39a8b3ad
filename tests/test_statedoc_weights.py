"""A stored document whose override holds a NaN or infinite weight is refused (review
impkill8): StateDoc forbids them, but its setting did not reach the nested RouteOverride,
and `{"v1": NaN}` or `1e999` was read as a weight. Only a writer with the fleet's key
could store one; the admin API never takes it; a routing table must never see it."""

from __future__ import annotations

import json

import pytest

from gateway.domain.statedoc import StateDoc


def _with_weight(raw: str) -> bytes:
    doc = StateDoc(generation=2).to_json()
    doc["overrides"] = {"iris": {"stable": None, "weights": {"v1": 1.0}, "actor": "a",
                                 "reason": "r", "time": "2026-01-01T00:00:00Z",
                                 "kind": "weights"}}
    return json.dumps(doc).encode().replace(b'"v1": 1.0', b'"v1": ' + raw.encode())


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_weight_not_finite_is_refused(raw: str) -> None:
    body = _with_weight(raw)
    assert StateDoc.from_json_bytes(body) is None
    with pytest.raises(ValueError):
        StateDoc.from_json(json.loads(body))


def test_a_finite_weight_is_read() -> None:
    doc = StateDoc.from_json_bytes(_with_weight("33.5"))
    assert doc is not None and doc.overrides["iris"].weights == {"v1": 33.5}
