"""Runtime overrides and version history (pure)."""

from __future__ import annotations

import pytest

from gateway.configfile import parse_config_text
from gateway.domain.overrides import (
    effective_stable,
    identity_problems,
    promote,
    record_config,
    release,
    rollback,
    set_weights,
)
from gateway.domain.routing import build_table
from gateway.domain.statedoc import StateDoc
from gateway.errors import ApiError

CFG = parse_config_text("""
routes:
  - name: iris
    match: {path_prefix: /iris}
    stable: v1
    versions:
      - {name: v0, url: "http://h:1", artifact: "sha256:aa", weight: 0}
      - {name: v1, url: "http://h:2", artifact: "sha256:bb", weight: 90}
      - {name: v2, url: "http://h:3", artifact: "sha256:cc", weight: 10}
""")
RC = CFG.routes[0]


def test_record_config_once_per_stable_and_digest() -> None:
    doc = record_config(StateDoc(), list(CFG.routes), "sha256:one", "t0")
    assert [e.stable for e in doc.history["iris"]] == ["v1"]
    assert doc.identities["iris"]["v2"]["artifact"] == "sha256:cc"
    assert record_config(doc, list(CFG.routes), "sha256:one", "t1") is doc  # nothing new


def test_rollback_without_to_goes_to_previous_stable() -> None:
    doc = record_config(StateDoc(), list(CFG.routes), "sha256:one", "t0")
    doc = promote(doc, RC, "v2", "alice", "ship v2", "t1")
    assert effective_stable(doc, RC) == "v2"
    doc = rollback(doc, RC, None, "bob", "v2 is bad", "t2")
    assert effective_stable(doc, RC) == "v1"
    assert doc.overrides["iris"].weights == {"v0": 0.0, "v1": 100.0, "v2": 0.0}
    assert [e.stable for e in doc.history["iris"]] == ["v1", "v2", "v1"]


def test_rollback_without_history_is_409() -> None:
    with pytest.raises(ApiError) as e:
        rollback(StateDoc(), RC, None, "a", "r", "t")
    assert e.value.status == 409


def test_rollback_refuses_a_changed_artifact() -> None:
    doc = StateDoc(identities={"iris": {"v0": {"url": "http://h:1", "artifact": "sha256:00"}}})
    with pytest.raises(ApiError) as e:
        rollback(doc, RC, "v0", "a", "r", "t")
    assert (e.value.status, e.value.type) == (409, "artifact_changed")
    assert identity_problems(doc, list(CFG.routes))[0][0] == "routes[0].versions[0].artifact"


def test_weights_validation_and_release() -> None:
    with pytest.raises(ApiError):
        set_weights(StateDoc(), RC, {"v9": 1}, "a", "r", "t")
    with pytest.raises(ApiError):
        set_weights(StateDoc(), RC, {"v1": -1}, "a", "r", "t")
    with pytest.raises(ApiError):
        set_weights(StateDoc(), RC, {"v1": 0}, "a", "r", "t")
    doc = set_weights(StateDoc(), RC, {"v1": 50, "v2": 50}, "a", "r", "t")
    assert build_table(CFG, doc).by_name["iris"].effective_weights()["v2"] == 50.0
    doc = release(doc, RC, "a", "r", "t")
    assert build_table(CFG, doc).by_name["iris"].effective_weights()["v2"] == 10.0
    with pytest.raises(ApiError):
        release(doc, RC, "a", "r", "t")


def test_unhealthy_stable_share_goes_to_previous_known_good() -> None:
    doc = record_config(StateDoc(), list(CFG.routes), "sha256:one", "t0")
    doc = promote(doc, RC, "v2", "alice", "ship", "t1")  # history: v1, v2
    doc = set_weights(doc, RC, {"v2": 90, "v0": 10}, "alice", "shift", "t2")
    table = build_table(CFG, doc, unhealthy=frozenset({("iris", "v2")}))
    plan = table.by_name["iris"]
    assert plan.previous == "v1"
    assert plan.effective_weights() == {"v0": 10.0, "v1": 90.0, "v2": 0.0}
