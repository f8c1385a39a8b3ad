"""Drills in the replicated state (domain/drills.py, pure): what a drill changes is
recorded with the change, and restore undoes exactly that — never an operator's own
change made meanwhile."""

from __future__ import annotations

import json

import pytest

from gateway.configfile import parse_config_text
from gateway.domain import drills
from gateway.domain.overrides import promote, record_config, set_weights
from gateway.domain.statedoc import KillFlag, StateDoc
from gateway.errors import ApiError

CFG = parse_config_text("""
routes:
  - name: iris
    match: {path_prefix: /iris}
    stable: v1
    versions:
      - {name: v1, url: "http://h:1", weight: 90}
      - {name: v2, url: "http://h:2", weight: 10}
  - name: iris-drill
    match: {path_prefix: /drill/iris}
    drill_for: iris
    stable: v1
    versions:
      - {name: v1, url: "http://h:1", weight: 90}
      - {name: v2, url: "http://h:2", weight: 10}
""")
RC = CFG.routes[1]
ROUTES = {r.name: r for r in CFG.routes}


def opened(doc: StateDoc | None = None, kind: str = "kill", version: str | None = "v2",
           drill: str = "d-1") -> StateDoc:
    doc = doc or record_config(StateDoc(), list(CFG.routes), "sha256:x", "t0")
    return drills.open_drill(doc, RC, drill, kind, version, "alice", "t1", 1e12, "nonce")


def test_open_records_the_route_state_and_refuses_a_second_drill_on_the_route() -> None:
    doc = opened()
    rec = doc.drills["d-1"]
    assert rec.before == drills.route_state(doc, RC)
    assert rec.before["weights"] == {"v1": 90.0, "v2": 10.0} and rec.before["kills"] == []
    with pytest.raises(ApiError) as e:
        opened(doc, drill="d-2")
    assert e.value.status == 409 and "d-1" in e.value.message
    with pytest.raises(ApiError) as e:
        drills.open_drill(StateDoc(), RC, "d-3", "kill", "v9", "a", "t", 1.0)
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        drills.open_drill(StateDoc(), RC, "d-3", "chaos", None, "a", "t", 1.0)
    assert e.value.status == 400


def test_kill_then_restore_is_the_state_before() -> None:
    doc = opened()
    before = drills.route_state(doc, RC)
    doc = drills.inject_kill(doc, "d-1", "version", "alice", "rehearsal", "t2")
    assert doc.kills["version:iris-drill:v2"].reason == "drill d-1: rehearsal"
    assert drills.route_state(doc, RC) != before
    doc, notes = drills.restore(doc, "d-1", ROUTES, "alice", "t3")
    assert notes == [{"unkill": "version:iris-drill:v2"}]
    assert drills.route_state(doc, RC) == before
    assert doc.drills["d-1"].restored and doc.drills["d-1"].injected == ()
    with pytest.raises(ApiError):  # a restored drill injects nothing more
        drills.inject_kill(doc, "d-1", "route", "alice", "again", "t4")


def test_a_kill_already_in_force_is_never_taken_over() -> None:
    doc = opened()
    real = KillFlag("version", "iris-drill", "v2", "bob", "incident", "t", 1)
    doc = doc.with_changes(kills={real.key: real})
    with pytest.raises(ApiError) as e:
        drills.inject_kill(doc, "d-1", "version", "alice", "r", "t2")
    assert e.value.status == 409


def test_restore_keeps_what_an_operator_changed_meanwhile() -> None:
    doc = drills.inject_kill(opened(), "d-1", "route", "alice", "r", "t2")
    # the operator lifts the drill's kill and kills again for a real reason
    real = KillFlag("route", "iris-drill", None, "bob", "real incident", "t3", 9)
    doc = doc.with_changes(kills={real.key: real})
    doc, notes = drills.restore(doc, "d-1", ROUTES, "alice", "t4")
    assert doc.kills == {real.key: real}
    assert notes[0]["kept"] == "route:iris-drill"


def test_rollback_restore_reinstates_the_previous_latch_exactly() -> None:
    doc = set_weights(opened(kind="rollback"), RC, {"v1": 70, "v2": 30}, "carol", "ramp", "t1")
    doc = drills.open_drill(doc.with_changes(drills={}), RC, "d-2", "rollback", None, "a",
                            "t1", 1e12)
    before = drills.route_state(doc, RC)
    doc = drills.inject_rollback(doc, "d-2", RC, "v1", "alice", "drill", "t2")
    assert doc.overrides["iris-drill"].weights == {"v1": 100.0, "v2": 0.0}
    doc, notes = drills.restore(doc, "d-2", ROUTES, "alice", "t3")
    assert drills.route_state(doc, RC) == before
    assert doc.overrides["iris-drill"].actor == "carol"  # the very override, not a copy
    assert notes == [{"override": "iris-drill", "to": notes[0]["to"]}]


def test_rollback_restore_of_an_unlatched_route_hands_it_back_to_the_file() -> None:
    doc = promote(opened(kind="rollback", version=None), RC, "v2", "x", "y", "t1")
    doc = doc.with_changes(overrides={})  # the file governs; v2 is in the history
    before = drills.route_state(doc, RC)
    doc = drills.inject_rollback(doc, "d-1", RC, "v2", "alice", "drill", "t2")
    assert drills.route_state(doc, RC)["stable"] == "v2"
    doc, _ = drills.restore(doc, "d-1", ROUTES, "alice", "t3")
    assert drills.route_state(doc, RC) == before
    assert doc.history["iris-drill"][-1].stable == "v1"  # the stable moved back: recorded


def test_fault_is_the_failover_drills_and_restore_clears_it() -> None:
    with pytest.raises(ApiError):
        drills.set_fault(opened(kind="kill"), "d-1", 5.0)
    doc = drills.set_fault(opened(kind="failover"), "d-1", 5.0)
    assert doc.drills["d-1"].fault == {"version": "v2", "expires": 5.0}
    assert drills.route_state(doc, RC)["faults"] == ["d-1"]
    doc, notes = drills.restore(doc, "d-1", ROUTES, "alice", "t3")
    assert doc.drills["d-1"].fault is None and notes == [{"fault_cleared": "v2"}]


def test_end_needs_a_restore_and_keeps_the_last_result() -> None:
    doc = drills.inject_kill(opened(), "d-1", "version", "alice", "r", "t2")
    with pytest.raises(ApiError) as e:
        drills.end(doc, "d-1", {"verdict": "passed"})
    assert e.value.status == 409
    doc, _ = drills.restore(doc, "d-1", ROUTES, "alice", "t3")
    doc = drills.end(doc, "d-1", {"verdict": "passed"})
    assert doc.drills == {} and doc.drill_results == {"kill:iris-drill": {"verdict": "passed"}}
    with pytest.raises(ApiError) as e:
        drills.end(doc, "d-1", {})
    assert e.value.status == 404


def test_the_document_round_trips_with_open_drills_and_results() -> None:
    doc = drills.set_fault(opened(kind="failover"), "d-1", 5.0)
    doc = drills.inject_kill(opened(doc.with_changes(drills={}), drill="d-2"), "d-2", "route",
                             "a", "r", "t")
    doc = doc.with_changes(drill_results={"kill:iris": {"verdict": "passed", "leaks": 0}})
    assert StateDoc.from_json(json.loads(json.dumps(doc.to_json()))) == doc


def test_a_record_rebuilt_from_the_audit_trail_restores_the_same() -> None:
    doc = drills.open_drill(record_config(StateDoc(), list(CFG.routes), "sha256:x", "t0"), RC,
                            "d-9", "rollback", None, "alice", "t1", 1e12)
    before = drills.route_state(doc, RC)
    doc = drills.inject_rollback(doc, "d-9", RC, "v2", "alice", "r", "t2")
    doc = drills.inject_kill(doc, "d-9", "route", "alice", "r", "t3")
    rec = doc.drills["d-9"]
    rb, kill = rec.injected
    # the audit events the API writes for these, newest first
    events = json.loads(json.dumps([
        {"drill": "d-9", "action": "kill", "target": {"scope": "route", "route": "iris-drill",
                                                      "version": None}, "after": kill["flag"]},
        {"drill": "d-9", "action": "rollback", "target": {"route": "iris-drill"},
         "before": rb["override"]["before"], "after": rb["override"]["after"]},
        {"drill": "d-8", "action": "kill", "target": {}, "after": {}},
        {"drill": "d-9", "action": "drill.start", "actor": "alice", "time": "t1",
         "target": {"kind": "rollback", "route": "iris-drill", "version": None},
         "before": rec.before}]))
    rebuilt = drills.record_from_audit("d-9", events)
    assert rebuilt is not None
    assert list(rebuilt.injected) == json.loads(json.dumps(rec.injected))
    lost = doc.with_changes(drills={"d-9": rebuilt})
    restored, notes = drills.restore(lost, "d-9", ROUTES, "bob", "t4")
    assert drills.route_state(restored, RC) == before and len(notes) == 2
    assert drills.record_from_audit("d-9", [{"drill": "d-9", "action": "drill.end"},
                                            *events]) is None
    assert drills.record_from_audit("d-7", events) is None
