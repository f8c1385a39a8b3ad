"""Rollback semantics (pure): a version a rollback took off is never again the target of a
rollback without `to` or of an automatic one (until an operator names it); a rollback to a
killed version is refused; releasing an automatic rollback restarts a progressive rollout
from its first step. The fleet's side (Redis lost, a new instance): test_rolled_off_fleet.py."""

from __future__ import annotations

import pytest

from gateway.configfile import parse_config_text
from gateway.domain import alerting, drills
from gateway.domain.configrecord import record_config
from gateway.domain.overrides import (
    effective_stable,
    promote,
    release,
    release_warnings,
    rollback,
    set_weights,
)
from gateway.domain.rolledoff import MAX_ROLLED_OFF, held_off
from gateway.domain.statedoc import (
    Change,
    DrillRecord,
    KillFlag,
    RouteOverride,
    StateDoc,
    apply_change,
)
from gateway.domain.tablebuild import build_table
from gateway.errors import ConflictingState
from tests.test_overrides import CFG, CFG_TEXT, RC, recorded, step

pytestmark = pytest.mark.timeout(30)


def rolled_back_and_released() -> StateDoc:
    """iris: v1 (config), promote v2, `rollback` (to v1: v2 rolled off), `release`."""
    doc = step(recorded(), lambda d: promote(d, RC, "v2", "alice", "ship v2", "t1"))
    doc = step(doc, lambda d: rollback(d, RC, None, "bob", "INC-1: v2 is bad", "t2"))
    return step(doc, lambda d: release(d, RC, "bob", "v1 is the file's stable", "t3"))


def test_a_released_rollback_never_makes_the_version_it_took_off_a_rollback_target() -> None:
    """Before: once the rollback was released, v2 (rolled off) was the previous stable
    again: the next `killgate rollback iris` (v1 bad now) put v2 back, as would an alert.
    Now it is 409 `no_previous_stable` naming v2 and how to go on, and nothing else moves."""
    doc = rolled_back_and_released()
    assert effective_stable(doc, RC) == "v1" and "iris" not in doc.overrides
    assert [(r.version, r.kind, r.actor) for r in doc.rolled_off["iris"]] == [
        ("v2", "rollback", "bob")]
    with pytest.raises(ConflictingState) as e:
        rollback(doc, RC, None, "carol", "v1 is bad too", "t4")
    assert e.value.type == "no_previous_stable"
    assert "'v2' was rolled off by rollback (bob, t2)" in str(e.value)
    assert "'to'" in str(e.value) and "promote" in str(e.value)
    with pytest.raises(ConflictingState):  # an alert's rollback of the stable neither
        alerting.rollback(doc, RC, "v1", "alertmanager", "v1 errors", "t4")
    assert build_table(CFG, doc).by_name["iris"].previous is None  # nor a known-good
    # an older stable is the target: the one before the version rolled off
    doc = step(doc, lambda d: promote(d, RC, "v0", "alice", "try v0", "t5"))
    doc = step(doc, lambda d: promote(d, RC, "v1", "alice", "v1 again", "t6"))
    # history v1 v2 v1 v0 v1: the previous stable is v0, then (v2 skipped) nothing
    doc = step(doc, lambda d: rollback(d, RC, None, "carol", "v1 is bad", "t7"))
    assert effective_stable(doc, RC) == "v0"


def test_an_operator_naming_the_version_or_a_new_deployment_of_it_brings_it_back() -> None:
    doc = rolled_back_and_released()
    # `weights` giving it traffic, `promote` it, `rollback --to` it: each clears it
    w = step(doc, lambda d: set_weights(d, RC, {"v1": 90, "v2": 10}, "alice", "retry", "t4"))
    assert "iris" not in w.rolled_off
    z = step(doc, lambda d: set_weights(d, RC, {"v1": 100}, "alice", "v1 only", "t4"))
    assert [r.version for r in z.rolled_off["iris"]] == ["v2"]  # (v2 at 0: not named)
    p = step(doc, lambda d: promote(d, RC, "v2", "alice", "fixed", "t4"))
    assert "iris" not in p.rolled_off
    back = step(doc, lambda d: rollback(d, RC, "v2", "alice", "v1 is worse", "t4"))
    assert [r.version for r in back.rolled_off["iris"]] == ["v1"]  # v1 left now
    # a config giving v2 another url is another deployment: the record no longer applies
    moved = parse_config_text(CFG_TEXT.replace("http://h:3", "http://h:4")).routes[0]
    assert held_off(doc, RC) and not held_off(doc, moved)
    assert effective_stable(step(doc, lambda d: rollback(d, moved, None, "c", "r", "t4")),
                            moved) == "v2"


def test_the_records_are_bounded_and_survive_the_documents_json() -> None:
    doc = StateDoc()
    for i in range(MAX_ROLLED_OFF + 3):
        to, frm = ("v1", "v2") if i % 2 else ("v2", "v1")
        doc = step(doc, lambda d, to=to, i=i: rollback(d, RC, to, f"op{i}", "flip", f"t{i}"))
        assert [r.version for r in doc.rolled_off["iris"]] == [frm]
    many = apply_change(doc, Change(rolled_off={"iris": tuple(
        doc.rolled_off["iris"][0].__class__(f"x{i}", None, None, "t", "a", "rollback")
        for i in range(MAX_ROLLED_OFF))}))
    again = step(many, lambda d: rollback(d, RC, "v1" if effective_stable(d, RC) == "v2"
                                          else "v2", "a", "r", "t"))
    assert len(again.rolled_off["iris"]) == MAX_ROLLED_OFF
    assert StateDoc.from_json(again.to_json()).rolled_off == again.rolled_off


@pytest.mark.parametrize("key", ["route:iris", "global"])
def test_a_rollback_under_a_route_or_global_kill_is_accepted(key: str) -> None:
    """Kill the route, roll back, unkill: the runbook's order. A rollback under a route's
    or the global kill sets what serves once the kill is lifted (every version is off
    meanwhile); refusing it made the operator unkill first, the bad version serving."""
    scope, _, route = key.partition(":")
    flag = KillFlag(scope, route or None, None, "dana", "INC-2", "t", 0)  # type: ignore[arg-type]
    doc = apply_change(recorded(), Change(kills={key: flag}))
    doc = step(doc, lambda d: rollback(d, RC, "v0", "bob", "to v0", "t1"))
    assert effective_stable(doc, RC) == "v0" and key in doc.kills


@pytest.mark.parametrize("key", ["version:iris:v0"])
def test_a_rollback_to_a_killed_version_is_refused_and_changes_nothing(key: str) -> None:
    """Before: `rollback --to v0` with v0 killed latched v0 at 100 % and every other
    version at 0: the route served nothing (a version rolled off is no spare). Now 409
    `target_killed` naming the kill and the unkill to run; also for a rollback without
    `to` whose target is killed, and for an alert's."""
    scope, _, rest = key.partition(":")
    route, _, version = rest.partition(":")
    flag = KillFlag(scope, route or None, version or None, "dana", "INC-2", "t", 0)  # type: ignore[arg-type]
    doc = apply_change(recorded(), Change(kills={key: flag}))
    with pytest.raises(ConflictingState) as e:
        rollback(doc, RC, "v0", "bob", "to v0", "t1")
    assert e.value.type == "target_killed"
    lift = {"global": "killgate unkill --global", "route:iris": "killgate unkill --route iris",
            "version:iris:v0": "killgate unkill --route iris --version v0"}[key]
    assert lift in str(e.value) and "'INC-2'" in str(e.value)
    assert ("another version (--to)" in str(e.value)) == (scope == "version")
    if scope == "version":  # the stable's previous one, killed: a plain rollback neither
        prev = parse_config_text(CFG_TEXT.replace("stable: v1", "stable: v0")).routes[0]
        d2 = step(StateDoc(), lambda d: record_config(d, [prev], "sha256:x", "t0"))
        d2 = step(d2, lambda d: promote(d, prev, "v1", "a", "r", "t"))
        d2 = apply_change(d2, Change(kills={key: flag}))
        with pytest.raises(ConflictingState, match="is not rolled back to 'v0'"):
            rollback(d2, prev, None, "bob", "v1 bad", "t1")
        with pytest.raises(ConflictingState, match="is not rolled back"):
            alerting.rollback(d2, prev, "v1", "alertmanager", "v1 errors", "t1")


def test_an_automatic_rollback_is_recorded_and_a_drill_rollback_is_not() -> None:
    doc = recorded()
    rec = DrillRecord("d1", "rollback", "iris", None, "alice", "t", 1e12, {})
    doc = apply_change(doc, Change(drills={"d1": rec}))
    doc = step(doc, lambda d: drills.inject_rollback(d, "d1", RC, "v0", "drill", "r", "t1"))
    assert effective_stable(doc, RC) == "v0" and doc.rolled_off == {}


STEPS_TEXT = CFG_TEXT.replace(
    "      - {name: v0, url: \"http://h:1\", artifact: \"sha256:aa\", weight: 0}\n", "") \
    .replace("weight: 90}", "weight: 50}").replace("weight: 10}", "weight: 50}") \
    + "    analysis: {steps: [5, 50, 100], step_interval: 1s}\n"


def test_releasing_an_automatic_rollback_restarts_the_rollout_at_its_first_step() -> None:
    """Before: releasing the auto_rollback of a progressive rollout left its progress
    `failed`, so the failed canary got the file's weight (50 %) at once, for good, and no
    step ever judged it again. Now the release restarts the rollout: 5 %, its first step."""
    cfg = parse_config_text(STEPS_TEXT)
    rc = cfg.routes[0]
    prog = {"canary": "v2", "step": 1, "since": 0.0, "state": "failed", "steps": [5, 50, 100]}
    auto = RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "killgate/auto",
                         "canary analysis failed", "t1", "auto_rollback")
    doc = apply_change(StateDoc(), Change(overrides={"iris": auto},
                                          progress={"iris": prog}))  # type: ignore[dict-item]
    assert build_table(cfg, doc).by_name["iris"].effective_weights()["v2"] == 0.0
    doc = step(doc, lambda d: release(d, rc, "bob", "fixed the canary's config", "t2"))
    assert "iris" not in doc.progress
    assert build_table(cfg, doc).by_name["iris"].effective_weights()["v2"] == 5.0
    # ... also when a `weights` override replaced the automatic rollback first (v2 given 5 %
    # by hand to try a fix): released, the rollout stayed `failed`, and v2 took the file's
    # 50 % at once, for good, never stepped or judged again (revroll5)
    failed = apply_change(StateDoc(), Change(overrides={"iris": auto},
                                             progress={"iris": prog}))  # type: ignore[dict-item]
    failed = step(failed, lambda d: set_weights(d, rc, {"v1": 95, "v2": 5}, "bob", "try", "t2"))
    failed = step(failed, lambda d: release(d, rc, "bob", "let the rollout go on", "t3"))
    assert "iris" not in failed.progress
    assert build_table(cfg, failed).by_name["iris"].effective_weights()["v2"] == 5.0
    # a `weights` override released keeps its rollout where it was (README: held, resumed)
    held = {**prog, "state": "paused", "held": "override"}
    w = RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "bob", "hold", "t1", "weights")
    doc = apply_change(StateDoc(), Change(overrides={"iris": w},
                                          progress={"iris": held}))  # type: ignore[dict-item]
    doc = step(doc, lambda d: release(d, rc, "bob", "go on", "t2"))
    assert doc.progress["iris"]["step"] == 1


def test_a_rollback_whose_previous_stable_left_the_config_says_so() -> None:
    """Before: `killgate rollback iris` (no `to`) after the previous stable was removed from
    the file answered 404 `unknown_version`, "route 'iris' has no version 'v1'", a version
    the operator never named (an alert's rollback was refused the same way). Now 409
    `no_previous_stable` saying the previous stable left the config, and to name one."""
    doc = step(recorded(), lambda d: promote(d, RC, "v2", "alice", "ship v2", "t1"))
    doc = step(doc, lambda d: release(d, RC, "alice", "v2 in git", "t2"))
    # the file now: v2 stable, v1 gone (history v1, v2, v1 from the release, then v2)
    text = CFG_TEXT.replace("stable: v1", "stable: v2").replace(
        '      - {name: v1, url: "http://h:2", artifact: "sha256:bb", weight: 90}\n', "")
    rc = parse_config_text(text).routes[0]
    doc = step(doc, lambda d: record_config(d, [rc], "sha256:two", "t3"))
    for refused in (lambda: rollback(doc, rc, None, "bob", "v2 is bad", "t4"),
                    lambda: alerting.rollback(doc, rc, "v2", "alertmanager", "v2 errors", "t4")):
        with pytest.raises(ConflictingState) as e:
            refused()
        assert e.value.type == "no_previous_stable"
        assert "'v1'" in str(e.value) and "no longer in the config" in str(e.value)
    assert build_table(parse_config_text(text), doc).by_name["iris"].previous is None



def test_a_rollback_taking_over_a_drills_records_what_the_drill_took_off() -> None:
    """A drill's rollback records nothing (a rehearsal). Before: an alert's (or an
    operator's) rollback to the same version took it over (the drill's restore then leaves
    it) and recorded nothing either (only v1 served under the drill): v2, the version
    alerted on, was not rolled off (a spare once the latch ends, a plain rollback's
    target, put back by a release with nothing said). Now the rollback taking it over
    records what served before the drill."""
    rec = DrillRecord("d1", "rollback", "iris", None, "alice", "t", 1e12, {})
    doc = apply_change(recorded(), Change(drills={"d1": rec}))
    doc = step(doc, lambda d: drills.inject_rollback(d, "d1", RC, "v1", "drill", "r", "t1"))
    assert doc.rolled_off == {}
    for actor, took in (
            ("alertmanager", lambda d: alerting.rollback(d, RC, "v2", "alertmanager",
                                                         "v2 errors", "t2")),
            ("bob", lambda d: rollback(d, RC, "v1", "bob", "INC-9: v2 is bad", "t2"))):
        over = step(doc, took)
        assert not drills.holds_override(over, "iris")
        assert [(r.version, r.actor) for r in over.rolled_off["iris"]] == [("v2", actor)]
        released = step(over, lambda d: release(d, RC, "carol", "back to the file", "t3"))
        [warning] = release_warnings(released, RC)
        assert warning.startswith("v2 was rolled off by ")
