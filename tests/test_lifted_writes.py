"""Which kill an unkill lifted, by the write that made its flag (`KillFlag.write`,
`StateDoc.lifted_writes`): pure tests of domain/writeids.py and domain/branches.py. The
end-to-end cases are in tests/test_lifted_review.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.domain import drills, kills
from gateway.domain.branches import lifts_unrecorded
from gateway.domain.statedoc import Change, DrillRecord, KillFlag, StateDoc, apply_change
from gateway.domain.writeids import MAX_LIFTED, MAX_LIFTS_PER_KEY, with_lifted_writes
from gateway.state.reseedmerge import merge_restrictive

pytestmark = pytest.mark.timeout(30)

T = "2026-12-04T00:00:00Z"


def _route_kill() -> KillFlag:
    return KillFlag("route", "iris", None, "bob", "bad", T, 0)


def _killed(doc: StateDoc) -> StateDoc:
    return apply_change(doc, Change(kills={"route:iris": _route_kill()}))


def _lifted(doc: StateDoc) -> StateDoc:
    return apply_change(doc, Change(kills={"route:iris": None}))


def _far(doc: StateDoc, n: int = 40) -> StateDoc:
    for i in range(n):
        doc = apply_change(doc, Change(identities={"b": {"v": {"n": i}}}))
    return doc


def test_a_flag_names_the_write_that_made_it_and_an_unkill_records_it() -> None:
    held = _killed(StateDoc(epoch="e"))
    flag = held.kills["route:iris"]
    assert flag.write == held.writes[-1]
    assert "write" not in flag.public()  # (API answers and audit events)
    doc = _lifted(held)
    assert doc.lifted_writes == {"route:iris": (flag.write,)}
    assert StateDoc.from_json(doc.to_json()) == doc
    assert not lifts_unrecorded(held, _far(doc))


def test_a_branch_that_killed_and_lifted_the_key_at_our_generation_does_not_name_ours() -> None:
    base = StateDoc(epoch="e")
    held, branch = _killed(base), _far(_lifted(_killed(base)))
    assert branch.lifted["route:iris"] == held.kills["route:iris"].generation
    assert lifts_unrecorded(held, branch)


def test_a_flag_from_a_version_before_flag_writes_is_judged_by_its_generation() -> None:
    held = _killed(StateDoc(epoch="e"))
    legacy = held.with_changes(kills={"route:iris": replace(held.kills["route:iris"], write="")})
    branch = _far(_lifted(_killed(StateDoc(epoch="e"))))
    assert not lifts_unrecorded(legacy, branch)  # (the generation names it: the old limit)
    # a document an older version wrote keeps no flag writes: generations decide
    older = _far(_lifted(held)).with_changes(lifted_writes={})
    assert not lifts_unrecorded(held, older)
    assert lifts_unrecorded(held, older.with_changes(lifted={}))


def test_a_drills_kill_taken_over_and_lifted_names_the_drills_flag_too() -> None:
    """A kill of a key an open drill killed replaces the drill's flag (kills.kill); an
    instance far behind that holds the drill's flag sees the unkill of the replacement."""
    rec = DrillRecord("d1", "kill", "iris", None, "bob", T, 0.0, {})
    doc = apply_change(StateDoc(epoch="e"), Change(drills={"d1": rec}))
    doc = apply_change(doc, drills.inject_kill(doc, "d1", "route", "bob", "x", T))
    held = doc
    change = kills.kill(doc, "route", "iris", None, "carol", "real", T)
    assert change is not None
    doc = _lifted(apply_change(doc, change))
    assert doc.lifted_writes["route:iris"] == (held.kills["route:iris"].write,
                                               doc.writes[-2])
    assert not lifts_unrecorded(held, _far(doc))


def test_lifted_writes_keep_the_newest_per_key_and_the_newest_keys() -> None:
    got = with_lifted_writes({}, [("k", f"{n}:a") for n in range(MAX_LIFTS_PER_KEY + 3)])
    assert got == {"k": tuple(f"{n}:a" for n in range(3, MAX_LIFTS_PER_KEY + 3))}
    assert with_lifted_writes({"k": ("1:a", "2:a")}, [("k", "1:a")]) == {"k": ("2:a", "1:a")}
    got = with_lifted_writes({}, [(f"k{n}", "1:a") for n in range(MAX_LIFTED + 2)])
    assert len(got) == MAX_LIFTED and "k0" not in got and f"k{MAX_LIFTED + 1}" in got


def test_a_reseed_keeps_both_sides_lifted_writes() -> None:
    a = _lifted(_killed(StateDoc(epoch="a")))
    b = _lifted(_killed(StateDoc(epoch="b")))
    merged = merge_restrictive(b, a)
    assert set(merged.lifted_writes["route:iris"]) == {a.lifted_writes["route:iris"][0],
                                                       b.lifted_writes["route:iris"][0]}
