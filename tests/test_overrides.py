"""Runtime overrides and version history (pure): each transition is a `Change`, and
`apply_change` is the one rule that makes the next document."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from gateway.configfile import parse_config_text
from gateway.domain.branches import relaxes
from gateway.domain.configrecord import identity_problems, record_config
from gateway.domain.overrides import effective_stable, promote, release, rollback, set_weights
from gateway.domain.statedoc import (
    MAX_HISTORY,
    Change,
    HistoryEntry,
    KillFlag,
    RouteOverride,
    StateDoc,
    apply_change,
)
from gateway.domain.tablebuild import build_table
from gateway.errors import ConflictingState, DomainError, InvalidChange, UnknownVersion

CFG_TEXT = """
routes:
  - name: iris
    match: {path_prefix: /iris}
    stable: v1
    versions:
      - {name: v0, url: "http://h:1", artifact: "sha256:aa", weight: 0}
      - {name: v1, url: "http://h:2", artifact: "sha256:bb", weight: 90}
      - {name: v2, url: "http://h:3", artifact: "sha256:cc", weight: 10}
"""
CFG = parse_config_text(CFG_TEXT)
RC = CFG.routes[0]


def step(doc: StateDoc, fn: Callable[[StateDoc], Change | None]) -> StateDoc:
    ch = fn(doc)
    assert ch is not None
    return apply_change(doc, ch)


def recorded() -> StateDoc:
    return step(StateDoc(), lambda d: record_config(d, list(CFG.routes), "sha256:one", "t0"))


def test_record_config_once_per_stable_and_digest() -> None:
    doc = recorded()
    assert [e.stable for e in doc.history["iris"]] == ["v1"]
    assert doc.history["iris"][0].generation == doc.generation == 1
    assert doc.identities["iris"]["v2"]["artifact"] == "sha256:cc"
    assert record_config(doc, list(CFG.routes), "sha256:one", "t1") is None  # nothing new


def test_rollback_without_to_goes_to_previous_stable() -> None:
    doc = recorded()
    doc = step(doc, lambda d: promote(d, RC, "v2", "alice", "ship v2", "t1"))
    assert effective_stable(doc, RC) == "v2"
    doc = step(doc, lambda d: rollback(d, RC, None, "bob", "v2 is bad", "t2"))
    assert effective_stable(doc, RC) == "v1"
    assert doc.overrides["iris"].weights == {"v0": 0.0, "v1": 100.0, "v2": 0.0}
    assert [e.stable for e in doc.history["iris"]] == ["v1", "v2", "v1"]
    assert [e.generation for e in doc.history["iris"]] == [1, 2, 3]


def test_a_rollback_run_again_never_puts_the_bad_version_back() -> None:
    """The failover review's item: `killgate rollback iris` run twice (a tired retry with a
    new key, a second operator) went to the previous stable of the rolled-back route, the
    version it was rolled off. Now 409 `rolled_back`; naming `to` still works."""
    doc = recorded()
    doc = step(doc, lambda d: promote(d, RC, "v2", "alice", "ship v2", "t1"))
    doc = step(doc, lambda d: rollback(d, RC, None, "bob", "v2 is bad", "t2"))
    with pytest.raises(ConflictingState) as e:
        rollback(doc, RC, None, "carol", "v2 is bad", "t3")
    assert e.value.type == "rolled_back"
    assert "'v2', the version it left" in str(e.value) and "'to'" in str(e.value)
    doc = step(doc, lambda d: rollback(d, RC, "v0", "carol", "older still", "t3"))
    assert effective_stable(doc, RC) == "v0"


def test_an_auto_rollback_of_a_canary_does_not_refuse_a_rollback_of_the_stable() -> None:
    """Review of 34e5f55: an auto_rollback (a canary failed its analysis) leaves the stable
    where it was and writes no history, so the previous stable is not a version the route
    was rolled off; `killgate rollback iris` (the stable is bad too) was 409 rolled_back,
    saying v0 was 'the version it left'. Alerts already let it through."""
    old = parse_config_text(CFG_TEXT.replace("stable: v1", "stable: v0"))
    doc = step(StateDoc(), lambda d: record_config(d, list(old.routes), "sha256:old", "t0"))
    doc = step(doc, lambda d: record_config(d, list(CFG.routes), "sha256:one", "t1"))
    # as the rollout driver writes it (control/rollout.py _rollback)
    auto = RouteOverride("v1", {"v0": 0.0, "v1": 100.0, "v2": 0.0}, "killgate/auto",
                         "canary analysis failed: error rate", "t2", "auto_rollback")
    doc = step(doc, lambda d: Change(overrides={"iris": auto}))
    doc = step(doc, lambda d: rollback(d, RC, None, "bob", "v1 is bad too", "t3"))
    assert effective_stable(doc, RC) == "v0"


def test_rollback_without_history_is_a_conflict_not_an_http_error() -> None:
    with pytest.raises(ConflictingState) as e:
        rollback(StateDoc(), RC, None, "a", "r", "t")
    assert e.value.type == "no_previous_stable"
    assert not hasattr(e.value, "status")  # the admin layer maps it (409)
    # (a new user's canary, stable v1 and v2 at 10 %: `killgate rollback iris` said only
    # "name one with 'to'", not that naming the stable is the way to take the canary out)
    assert e.value.message == (
        f"route 'iris' has no earlier stable version in its history (its stable, "
        f"{RC.stable!r}, is the first); name one with 'to' (naming {RC.stable!r} keeps it "
        "and takes the other versions' traffic off)"), e.value.message


def test_rollback_refuses_a_changed_artifact() -> None:
    doc = StateDoc(identities={"iris": {"v0": {"url": "http://h:1", "artifact": "sha256:00"}}})
    with pytest.raises(ConflictingState) as e:
        rollback(doc, RC, "v0", "a", "r", "t")
    assert e.value.type == "artifact_changed"
    assert identity_problems(doc, list(CFG.routes))[0][0] == "routes[0].versions[0].artifact"


def test_weights_validation_and_release() -> None:
    with pytest.raises(UnknownVersion):
        set_weights(StateDoc(), RC, {"v9": 1}, "a", "r", "t")
    with pytest.raises(InvalidChange):
        set_weights(StateDoc(), RC, {"v1": -1}, "a", "r", "t")
    with pytest.raises(InvalidChange):
        set_weights(StateDoc(), RC, {"v1": 0}, "a", "r", "t")
    doc = step(StateDoc(), lambda d: set_weights(d, RC, {"v1": 50, "v2": 50}, "a", "r", "t"))
    assert build_table(CFG, doc).by_name["iris"].effective_weights()["v2"] == 50.0
    doc = step(doc, lambda d: release(d, RC, "a", "r", "t"))
    assert build_table(CFG, doc).by_name["iris"].effective_weights()["v2"] == 10.0
    with pytest.raises(DomainError):
        release(doc, RC, "a", "r", "t")


def test_unhealthy_stable_share_goes_to_previous_known_good() -> None:
    doc = recorded()
    doc = step(doc, lambda d: promote(d, RC, "v2", "alice", "ship", "t1"))  # history: v1, v2
    doc = step(doc, lambda d: set_weights(d, RC, {"v2": 90, "v0": 10}, "alice", "shift", "t2"))
    table = build_table(CFG, doc, unhealthy=frozenset({("iris", "v2")}))
    plan = table.by_name["iris"]
    assert plan.previous == "v1"
    assert plan.effective_weights() == {"v0": 10.0, "v1": 90.0, "v2": 0.0}


def test_an_unhealthy_stables_share_goes_whole_to_the_previous_known_good() -> None:
    """Before: a request drawn for the unhealthy stable was drawn again over every version
    that could serve, so part of the stable's share went to the canary: at 90/10 with v1
    down, v2 (the unproven version) took about 19 % (sticky users: 15 %), while
    `effective_weights` (and /v1/status) said 10 %. Now the stable's share goes whole to the
    previous known-good, and only the stable's sticky users move."""
    doc = step(recorded(), lambda d: promote(d, RC, "v0", "alice", "try v0", "t1"))
    doc = step(doc, lambda d: release(d, RC, "alice", "back to the file", "t2"))
    ok = build_table(CFG, doc).by_name["iris"]
    plan = build_table(CFG, doc, unhealthy=frozenset({("iris", "v1")})).by_name["iris"]
    assert plan.previous == "v0"
    assert plan.effective_weights() == {"v0": 90.0, "v1": 0.0, "v2": 10.0}
    rand = random.Random(7).random  # (seeded: the same draws every run)
    chosen = Counter(plan.choose(None, None, rand).target.name  # type: ignore[union-attr]
                     for _ in range(20000))
    assert abs(chosen["v2"] / 20000 - 0.10) < 0.01, chosen
    for key in map(str, range(3000)):
        before = ok.choose(key, None, random.random).target.name  # type: ignore[union-attr]
        after = plan.choose(key, None, random.random).target.name  # type: ignore[union-attr]
        assert after == {"v1": "v0"}.get(before, before), (key, before, after)


def test_apply_change_is_the_one_rule() -> None:
    """Generation + 1, a new kill stamped with it (an existing one keeps its own), a lift,
    history appended and trimmed, progress ended: all by `apply_change`."""
    flag = KillFlag("route", "iris", None, "a", "r", "t", 0)
    doc = apply_change(StateDoc(generation=4), Change(kills={"route:iris": flag}))
    assert doc.generation == 5 and doc.kills["route:iris"].generation == 5
    doc = apply_change(doc, Change(kills={"global": KillFlag("global", None, None, "a", "r",
                                                             "t", 0)}))
    assert doc.kills["route:iris"].generation == 5 and doc.kills["global"].generation == 6
    doc = apply_change(doc, Change(kills={"global": None}))
    assert set(doc.kills) == {"route:iris"} and doc.generation == 7
    entry = HistoryEntry("v1", "t", "a", "r")
    for _ in range(MAX_HISTORY + 5):
        doc = apply_change(doc, Change(history={"iris": (entry,)},
                                       progress={"iris": {"canary": "v2", "step": 0}}))
    assert len(doc.history["iris"]) == MAX_HISTORY
    assert doc.history["iris"][-1].generation == doc.generation
    doc = apply_change(doc, Change(progress={"iris": None}))
    assert doc.progress == {}
    with pytest.raises(ValueError):
        apply_change(doc, Change(), generation=doc.generation)  # never backwards or equal


def test_only_added_kills_do_not_relax() -> None:
    flag = KillFlag("route", "iris", None, "a", "r", "t", 1)
    killed = StateDoc(generation=1, kills={"route:iris": flag})
    assert not relaxes(StateDoc(), killed)
    assert relaxes(killed, StateDoc(generation=2))  # a lift
    weights = step(killed, lambda d: set_weights(d, RC, {"v1": 1}, "a", "r", "t"))
    assert relaxes(killed, weights)  # an override


@pytest.mark.parametrize("weights", [{"v1": 1e-320, "v2": 1e-320}, {"v1": 1e308, "v2": 1e308},
                                     {"v1": 100, "v2": 1e-9}])
def test_weights_that_overflow_routing_are_refused(weights: dict[str, float]) -> None:
    """Weights routing cannot sum or score (ninth hostile review): with 1e-320 each, every
    sticky request raised (each rendezvous score infinite, no version chosen: a 500 per
    request); with 1e308 each, the sum was infinite, all weighted traffic went to the last
    version and the effective weights shown were NaN."""
    with pytest.raises(InvalidChange, match="between 1e-06 and 1e\\+06"):
        set_weights(StateDoc(), RC, weights, "a", "r", "t")
    ok = step(StateDoc(), lambda d: set_weights(d, RC, {"v1": 1e6, "v2": 1e-6}, "a", "r", "t"))
    assert build_table(CFG, ok).by_name["iris"].choose("user", None, random.random).target
