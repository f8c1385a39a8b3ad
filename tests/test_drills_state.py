"""Drills in the replicated state (domain/drills.py, pure): what a drill changes is
recorded with the change, and restore undoes exactly that — never an operator's own
change made meanwhile."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gateway.configfile import parse_config_text
from gateway.domain import drills
from gateway.domain.configrecord import record_config
from gateway.domain.overrides import promote, set_weights
from gateway.domain.statedoc import Change, KillFlag, StateDoc, apply_change
from gateway.errors import ConflictingState, DomainError, InvalidChange, UnknownDrill, UnknownVersion

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


def ap(doc: StateDoc, ch: Change | None) -> StateDoc:
    return apply_change(doc, ch) if ch else doc


def base() -> StateDoc:
    return ap(StateDoc(), record_config(StateDoc(), list(CFG.routes), "sha256:x", "t0"))


def opened(doc: StateDoc | None = None, kind: str = "kill", version: str | None = "v2",
           drill: str = "d-1") -> StateDoc:
    doc = doc or base()
    return ap(doc, drills.open_drill(doc, RC, drill, kind, version, "alice", "t1", 1e12, "nonce"))


def restored(doc: StateDoc, drill: str) -> tuple[StateDoc, list[dict]]:
    ch, notes = drills.restore(doc, drill, ROUTES, "alice", "t9")
    return ap(doc, ch), notes


def test_open_records_the_route_state_and_refuses_a_second_drill_on_the_route() -> None:
    doc = opened()
    rec = doc.drills["d-1"]
    assert rec.before == drills.route_state(doc, RC)
    assert rec.before["weights"] == {"v1": 90.0, "v2": 10.0} and rec.before["kills"] == []
    with pytest.raises(ConflictingState) as e:
        opened(doc, drill="d-2")
    assert e.value.type == "drill_in_progress" and "d-1" in e.value.message
    with pytest.raises(UnknownVersion):
        drills.open_drill(StateDoc(), RC, "d-3", "kill", "v9", "a", "t", 1.0)
    with pytest.raises(InvalidChange):
        drills.open_drill(StateDoc(), RC, "d-3", "chaos", None, "a", "t", 1.0)


def test_kill_then_restore_is_the_state_before() -> None:
    doc = opened()
    before = drills.route_state(doc, RC)
    doc = ap(doc, drills.inject_kill(doc, "d-1", "version", "alice", "rehearsal", "t2"))
    flag = doc.kills["version:iris-drill:v2"]
    assert flag.reason == "drill d-1: rehearsal" and flag.generation == doc.generation
    assert drills.route_state(doc, RC) != before
    doc, notes = restored(doc, "d-1")
    assert notes == [{"unkill": "version:iris-drill:v2"}]
    assert drills.route_state(doc, RC) == before
    assert doc.drills["d-1"].restored and doc.drills["d-1"].injected == ()
    with pytest.raises(ConflictingState):  # a restored drill injects nothing more
        drills.inject_kill(doc, "d-1", "route", "alice", "again", "t4")
    with pytest.raises(UnknownDrill):
        drills.inject_kill(doc, "d-9", "route", "alice", "r", "t4")


def test_a_kill_already_in_force_is_never_taken_over() -> None:
    doc = opened()
    real = KillFlag("version", "iris-drill", "v2", "bob", "incident", "t", 1)
    doc = doc.with_changes(kills={real.key: real})
    with pytest.raises(ConflictingState) as e:
        drills.inject_kill(doc, "d-1", "version", "alice", "r", "t2")
    assert e.value.type == "already_killed"


def test_restore_keeps_what_an_operator_changed_meanwhile() -> None:
    doc = opened()
    doc = ap(doc, drills.inject_kill(doc, "d-1", "route", "alice", "r", "t2"))
    # the operator lifts the drill's kill and kills again for a real reason
    real = KillFlag("route", "iris-drill", None, "bob", "real incident", "t3", 9)
    doc = doc.with_changes(kills={real.key: real})
    doc, notes = restored(doc, "d-1")
    assert doc.kills == {real.key: real}
    assert notes[0]["kept"] == "route:iris-drill"


def test_rollback_restore_reinstates_the_previous_latch_exactly() -> None:
    doc = base()
    doc = ap(doc, set_weights(doc, RC, {"v1": 70, "v2": 30}, "carol", "ramp", "t1"))
    doc = opened(doc, kind="rollback", version=None, drill="d-2")
    before = drills.route_state(doc, RC)
    doc = ap(doc, drills.inject_rollback(doc, "d-2", RC, "v1", "alice", "drill", "t2"))
    assert doc.overrides["iris-drill"].weights == {"v1": 100.0, "v2": 0.0}
    doc, notes = restored(doc, "d-2")
    assert drills.route_state(doc, RC) == before
    assert doc.overrides["iris-drill"].actor == "carol"  # the very override, not a copy
    assert notes == [{"override": "iris-drill", "to": notes[0]["to"]}]


def test_rollback_restore_of_an_unlatched_route_hands_it_back_to_the_file() -> None:
    doc = base()
    doc = ap(doc, promote(doc, RC, "v2", "x", "y", "t1"))
    doc = doc.with_changes(overrides={})  # the file governs; v2 is in the history
    doc = opened(doc, kind="rollback", version=None)
    before = drills.route_state(doc, RC)
    doc = ap(doc, drills.inject_rollback(doc, "d-1", RC, "v2", "alice", "drill", "t2"))
    assert drills.route_state(doc, RC)["stable"] == "v2"
    doc, _ = restored(doc, "d-1")
    assert drills.route_state(doc, RC) == before
    last = doc.history["iris-drill"][-1]
    assert last.stable == "v1" and last.generation == doc.generation  # recorded, stamped


def test_fault_is_the_failover_drills_and_restore_clears_it() -> None:
    with pytest.raises(ConflictingState):
        drills.set_fault(opened(kind="kill"), "d-1", 5.0)
    doc = opened(kind="failover")
    doc = ap(doc, drills.set_fault(doc, "d-1", 5.0))
    assert doc.drills["d-1"].fault == {"version": "v2", "expires": 5.0}
    assert drills.route_state(doc, RC)["faults"] == ["d-1"]
    doc, notes = restored(doc, "d-1")
    assert doc.drills["d-1"].fault is None and notes == [{"fault_cleared": "v2"}]


def test_end_needs_a_restore_and_keeps_the_last_result() -> None:
    doc = opened()
    doc = ap(doc, drills.inject_kill(doc, "d-1", "version", "alice", "r", "t2"))
    with pytest.raises(ConflictingState):
        drills.end(doc, "d-1", {"verdict": "passed"})
    doc, _ = restored(doc, "d-1")
    doc = ap(doc, drills.end(doc, "d-1", {"verdict": "passed"}))
    assert doc.drills == {} and doc.drill_results == {"kill:iris-drill": {"verdict": "passed"}}
    with pytest.raises(UnknownDrill):
        drills.end(doc, "d-1", {})


def test_restore_and_end_merge_into_one_change() -> None:
    doc = opened()
    doc = ap(doc, drills.inject_kill(doc, "d-1", "route", "alice", "r", "t2"))
    first, _ = drills.restore(doc, "d-1", ROUTES, "alice", "t3")
    both = drills.merge(first, drills.end(ap(doc, first), "d-1", {"verdict": "aborted"}))
    after = ap(doc, both)
    assert after.kills == {} and after.drills == {}
    assert after.drill_results["kill:iris-drill"] == {"verdict": "aborted"}


def test_merge_keeps_every_field_of_both_changes() -> None:
    """Each of Change's fields, set in the first change only and in the second only: a
    field merge forgot (one added to Change later, say) is caught."""
    flag = KillFlag("global", None, None, "a", "r", "t", 0)
    values = {"kills": {"global": flag}, "overrides": {"iris": None},
              "history": {"iris": ()}, "progress": {"iris": None},
              "identities": {"iris": {"v1": {"url": "u"}}}, "epoch": "e1",
              "lineage": {"e0": 1},
              "approvals": {"ap-1": {"x": 1}}, "drills": {"d-1": None},
              "drill_results": {"kill:iris": {"verdict": "passed"}}, "rolled_off": {"iris": ()},
              "named": frozenset({"iris"}), "serving": frozenset({("iris", "v1")})}
    assert set(values) == {f.name for f in dataclasses.fields(Change)}
    for name, value in values.items():
        one = Change(**{name: value})
        assert getattr(drills.merge(one, Change()), name) == value, name
        assert getattr(drills.merge(Change(), one), name) == value, name


def test_the_document_round_trips_with_open_drills_and_results() -> None:
    doc = opened(kind="failover")
    doc = ap(doc, drills.set_fault(doc, "d-1", 5.0))
    doc = opened(doc.with_changes(drills={}), drill="d-2")
    doc = ap(doc, drills.inject_kill(doc, "d-2", "route", "a", "r", "t"))
    doc = doc.with_changes(drill_results={"kill:iris": {"verdict": "passed", "leaks": 0}})
    assert StateDoc.from_json(json.loads(json.dumps(doc.to_json()))) == doc


def test_a_record_rebuilt_from_the_audit_trail_restores_the_same() -> None:
    doc = opened(kind="rollback", version=None, drill="d-9")
    before = drills.route_state(doc, RC)
    doc = ap(doc, drills.inject_rollback(doc, "d-9", RC, "v2", "alice", "r", "t2"))
    doc = ap(doc, drills.inject_kill(doc, "d-9", "route", "alice", "r", "t3"))
    rec = doc.drills["d-9"]
    rb, _ = rec.injected
    # the audit events the API writes for these (with the committed flag), newest first
    events = json.loads(json.dumps([
        {"drill": "d-9", "action": "kill", "target": {"scope": "route", "route": "iris-drill",
                                                      "version": None},
         "after": doc.kills["route:iris-drill"].public()},
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
    back, notes = restored(lost, "d-9")
    assert drills.route_state(back, RC) == before and len(notes) == 2
    assert drills.record_from_audit("d-9", [{"drill": "d-9", "action": "drill.end"},
                                            *events]) is None
    assert drills.record_from_audit("d-7", events) is None


def test_domain_errors_are_not_http_errors() -> None:
    with pytest.raises(DomainError) as e:
        drills.end(StateDoc(), "d-x", {})
    assert not hasattr(e.value, "status")


def test_restore_records_its_history_entry_on_a_route_with_a_full_history() -> None:
    """The restore's move back to the old stable is recorded in the route's history also
    when the history is full (it was lost: the entries were found by counting them, and a
    full history does not grow)."""
    from gateway.domain.statedoc import MAX_HISTORY

    doc = base()
    for i in range(MAX_HISTORY):
        doc = ap(doc, promote(doc, RC, ("v1", "v2")[i % 2], "x", f"p{i}", f"t{i}"))
    assert len(doc.history["iris-drill"]) == MAX_HISTORY
    stable = doc.overrides["iris-drill"].stable
    doc = opened(doc, kind="rollback", version=None)
    before = drills.route_state(doc, RC)
    doc = ap(doc, drills.inject_rollback(doc, "d-1", RC, None, "alice", "drill", "t2"))
    assert doc.history["iris-drill"][-1].stable != stable
    doc, _ = restored(doc, "d-1")
    assert drills.route_state(doc, RC) == before
    last = doc.history["iris-drill"][-1]
    assert (last.stable, last.reason) == (stable, "drill d-1: restore")


def test_the_state_keeps_only_the_numbers_of_a_drills_summary() -> None:
    """A `killgate:drill` token's summary (16 KiB each, one per kind and route) was kept
    whole in the replicated state, which every instance loads on every write."""
    doc = opened()
    doc, _ = restored(doc, "d-1")
    summary = {"time_to_kill_ms": {"p50": 1.5, "p99": 2, "max": 3, "note": "x" * 9000},
               "time_to_restore_ms": {"max": 7.0}, "leaks": 0, "errors": 2, "requests": 90,
               "reasons": ["y" * 9000], "restored": True, "extra": {"z": "w" * 9000}}
    doc = ap(doc, drills.end(doc, "d-1", {"verdict": "failed", "summary": summary}))
    assert doc.drill_results["kill:iris-drill"] == {"verdict": "failed", "summary": {
        "time_to_kill_ms": {"p50": 1.5, "p99": 2, "max": 3},
        "time_to_restore_ms": {"max": 7.0}, "leaks": 0, "errors": 2, "requests": 90}}


def test_a_record_rebuilt_from_the_audit_trail_keeps_its_deadline() -> None:
    """(It was 0: the rebuilt drill counted as overdue at once.)"""
    start = {"drill": "d-5", "action": "drill.start", "actor": "a", "time": "t",
             "target": {"kind": "kill", "route": "iris-drill", "version": "v2"},
             "before": {}, "after": {"deadline": 1.9e9, "production": False}}
    rec = drills.record_from_audit("d-5", [start])
    assert rec is not None and rec.deadline == 1.9e9


def test_the_results_that_go_are_the_least_recent_not_the_first_kept() -> None:
    """The state keeps the last result of at most 50 kinds and routes, "the oldest go":
    it dropped the first one kept, which a result updated since keeps its place in the
    document: the weekly drill's, ended yesterday, went before one ended once, months ago
    (and with it its killgate_drill_last_* series, which the alerts read)."""
    from gateway.domain.drillresults import MAX_RESULTS, kept_results
    from gateway.domain.statedoc import DrillRecord

    def rec(route: str) -> DrillRecord:
        return DrillRecord("d", "kill", route, None, "a", "t", 0.0, {})

    doc = base()
    for i in range(MAX_RESULTS):  # "weekly" first, then 49 others, each once
        route = "weekly" if i == 0 else f"r{i}"
        doc = ap(doc, Change(drill_results=kept_results(doc, rec(route), {"time": 100 + i})))
    doc = ap(doc, Change(drill_results=kept_results(doc, rec("weekly"), {"time": 1000})))
    doc = ap(doc, Change(drill_results=kept_results(doc, rec("new"), {"time": 1001})))
    assert len(doc.drill_results) == MAX_RESULTS
    assert "kill:weekly" in doc.drill_results and "kill:r1" not in doc.drill_results
