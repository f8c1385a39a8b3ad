"""domain/kills.py: the one rule every kill follows (admin API, alerts), and how it meets a
drill's kill of the same key."""

from __future__ import annotations

from dataclasses import replace

from gateway.configfile import parse_config_text
from gateway.domain import alerting, drills, kills
from gateway.domain.configrecord import record_config
from gateway.domain.statedoc import Change, KillFlag, StateDoc, apply_change

CFG = parse_config_text("""
routes:
  - name: iris
    match: {path_prefix: /iris}
    stable: v1
    versions:
      - {name: v1, url: "http://h:1", weight: 90}
      - {name: v2, url: "http://h:2", weight: 10}
""")
RC = CFG.routes[0]
ROUTES = {RC.name: RC}


def ap(doc: StateDoc, ch: Change | None) -> StateDoc:
    return apply_change(doc, ch) if ch else doc


def production_drill(kind: str = "kill") -> StateDoc:
    """A drill on the production route `iris` (opened with production: true) that has
    killed v2 (kind kill) or rolled the route back to v1 (kind rollback)."""
    doc = ap(StateDoc(), record_config(StateDoc(), list(CFG.routes), "sha256:x", "t0"))
    doc = ap(doc, drills.open_drill(doc, RC, "d-1", kind, "v2", "drillbot", "t1", 1e12, "n"))
    if kind == "kill":
        return ap(doc, drills.inject_kill(doc, "d-1", "version", "drillbot", "r", "t2"))
    return ap(doc, drills.inject_rollback(doc, "d-1", RC, "v1", "drillbot", "r", "t2"))


def test_a_kill_in_force_changes_nothing_but_may_cut_inflight() -> None:
    doc = ap(StateDoc(), kills.kill(StateDoc(), "version", "iris", "v2", "bob", "why", "t",
                                    abort_inflight=False))
    flag = doc.kills["version:iris:v2"]
    assert (flag.actor, flag.abort_inflight, flag.generation) == ("bob", False, 1)
    assert kills.kill(doc, "version", "iris", "v2", "carol", "again", "t2", False) is None
    up = ap(doc, kills.kill(doc, "version", "iris", "v2", "carol", "cut", "t2"))
    assert up.kills["version:iris:v2"] == KillFlag("version", "iris", "v2", "bob", "why", "t",
                                                   1, True, flag.write)  # who, when, why kept
    assert kills.kill(up, "version", "iris", "v2", "carol", "again", "t3") is None
    assert ap(doc, kills.kill(doc, "global", None, None, "a", "r", "t")).kills.keys() == {
        "version:iris:v2", "global"}


def test_a_kill_of_what_a_drill_killed_takes_it_over_and_survives_the_restore() -> None:
    doc = production_drill()
    assert drills.holds_kill(doc, "version:iris:v2")
    # the real v2 goes bad during the drill: the operator (or an alert) kills it
    doc = ap(doc, kills.kill(doc, "version", "iris", "v2", "bob", "real incident", "t3"))
    assert doc.kills["version:iris:v2"].actor == "bob"
    assert not drills.holds_kill(doc, "version:iris:v2")
    ch, notes = drills.restore(doc, "d-1", ROUTES, "drillbot", "t4")
    doc = ap(doc, ch)
    assert doc.kills["version:iris:v2"].reason == "real incident"
    assert notes == [{"kept": "version:iris:v2",
                      "why": "lifted or replaced since the drill made it"}]


def test_an_alert_kill_during_a_drill_survives_the_restore() -> None:
    doc = production_drill()
    doc = ap(doc, alerting.kill(doc, "iris", "v2", "alertmanager/k", "alert firing", "t3"))
    doc = ap(doc, drills.restore(doc, "d-1", ROUTES, "drillbot", "t4")[0])
    assert doc.kills["version:iris:v2"].actor == "alertmanager/k"


def test_an_alert_rollback_during_a_drill_rollback_survives_the_restore() -> None:
    doc = production_drill("rollback")
    assert drills.holds_override(doc, "iris")
    ch = alerting.rollback(doc, RC, "v2", "alertmanager/k", "canary errors", "t3")
    assert ch is not None  # not "already rolled back": that rollback is the drill's
    doc = ap(doc, ch)
    assert not drills.holds_override(doc, "iris")
    doc = ap(doc, drills.restore(doc, "d-1", ROUTES, "drillbot", "t4")[0])
    ov = doc.overrides["iris"]
    assert (ov.actor, ov.stable, ov.weights) == ("alertmanager/k", "v1",
                                                 {"v1": 100.0, "v2": 0.0})
    # and once the alert's rollback stands, a resend changes nothing
    assert alerting.rollback(doc, RC, "v2", "alertmanager/k", "again", "t5") is None


def test_which_inflight_answers_a_new_document_cuts() -> None:
    """Only kills that newly ask to cut in-flight answers cut them; the widest scope that
    covers an exchange names why."""
    quiet = ap(StateDoc(), kills.kill(StateDoc(), "version", "iris", "v2", "bob", "why", "t",
                                      abort_inflight=False))
    assert kills.newly_aborting(StateDoc(), quiet) == frozenset()
    loud = ap(quiet, kills.kill(quiet, "version", "iris", "v2", "bob", "why", "t"))
    assert kills.newly_aborting(quiet, loud) == {"version:iris:v2"}
    assert kills.newly_aborting(loud, loud) == frozenset()  # already cutting: nothing new
    added = kills.newly_aborting(quiet, loud)
    assert kills.covering(added, "iris", "v2") == "version"
    assert kills.covering(added, "iris", "v1") is None
    assert kills.covering(added, "iris", None) is None
    assert kills.covering(frozenset({"route:iris", "global"}), "iris", "v1") == "global"
    assert kills.covering(frozenset({"route:iris"}), "iris", None) == "route"
    assert kills.covering(frozenset({"route:iris"}), "other", "v1") is None


def test_in_force_is_the_kill_rule_asked_by_a_kill_the_store_cannot_commit() -> None:
    """`in_force` (an alert's kill in an outage, `kill --local`) answers a flag exactly
    when `kill` would change nothing: a person's kill, not a drill's, not one a re-seed
    carried (`carried`), not one a kill asking to cut in-flight answers would upgrade."""
    ask = ("version", "iris", "v2")
    plain = ap(StateDoc(), kills.kill(StateDoc(), *ask, "bob", "why", "t"))
    calm = ap(StateDoc(), kills.kill(StateDoc(), *ask, "bob", "why", "t", False))
    carried = replace(plain, lineage={"w-re-seed": plain.generation + 1})
    assert kills.carried(carried, carried.kills["version:iris:v2"])
    for doc, abort, held in [(plain, True, True), (calm, False, True), (calm, True, False),
                             (carried, True, False), (production_drill(), True, False),
                             (StateDoc(), True, False)]:
        flag = kills.in_force(doc, *ask, abort)
        assert (flag is not None) is held
        assert (kills.kill(doc, *ask, "carol", "r", "t2", abort) is None) is held
        assert flag is None or flag is doc.kills["version:iris:v2"]
