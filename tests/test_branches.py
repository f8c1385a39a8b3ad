"""Branches of the state history (pure): every write names itself, a document keeps the
newest writes it descends from, and `descends` tells a successor from a document written
on another branch (a lagging replica promoted, then written on), or says it cannot tell."""

from __future__ import annotations

import pytest

from gateway.domain.branches import (
    collides,
    descends,
    joined_lifted,
    joined_writes,
    lifts_unrecorded,
    relaxes,
    replaces_another,
)
from gateway.domain.statedoc import Change, KillFlag, StateDoc, apply_change
from gateway.domain.writeids import MAX_LIFTED, MAX_WRITES, trim_writes, write_generation
from gateway.state.reseedmerge import merge_restrictive

pytestmark = pytest.mark.timeout(10)

FLAG = KillFlag("route", "iris", None, "alice", "bad", "2026-12-04T00:00:00Z", 0)


def write(doc: StateDoc, n: int = 0) -> StateDoc:
    return apply_change(doc, Change(identities={"r": {"v": {"n": n}}}))


def test_every_write_names_itself_and_keeps_the_newest_writes() -> None:
    doc = StateDoc(epoch="e")
    seen = []
    for n in range(MAX_WRITES + 5):
        doc = write(doc, n)
        seen.append(doc.writes[-1])
        assert write_generation(doc.writes[-1]) == doc.generation
    assert doc.writes == tuple(seen[-MAX_WRITES:])
    assert len({w.partition(":")[2] for w in seen}) == len(seen)  # no two share an id
    assert StateDoc.from_json(doc.to_json()) == doc  # kept through the store


def test_a_successor_descends_and_a_write_on_another_branch_does_not() -> None:
    base = write(write(StateDoc(epoch="e")))
    a = apply_change(base, Change(kills={"route:iris": FLAG}))  # generation G, the kill
    b = write(write(base, 7), 8)  # G and G+1 written on `base`: never saw a's kill
    assert b.epoch == a.epoch and b.generation == a.generation + 1
    assert not collides(a, b) and relaxes(a, b)  # generations alone: a successor
    assert descends(b, a) is False
    assert descends(b.with_changes(generation=a.generation), a) is False  # same generation
    assert descends(write(a), a) is True
    assert descends(write(write(a)), base) is True


def test_when_the_documents_cannot_tell() -> None:
    a = apply_change(write(StateDoc(epoch="e")), Change(kills={"route:iris": FLAG}))
    legacy = a.with_changes(writes=())  # written by a version before write ids
    assert descends(legacy, a) is None and descends(a, legacy) is None
    far = a
    for n in range(MAX_WRITES + 1):
        far = write(far, n)
    assert descends(far, a) is None  # a is older than far's window
    # a legacy document then written on by current code starts a list of its own
    assert descends(write(legacy), a) is None
    # a document at a's generation not written by apply_change (no own write at it)
    assert descends(a, a.with_changes(writes=a.writes[:-1])) is None


def test_a_reseed_keeps_both_sides_writes() -> None:
    base = write(StateDoc(epoch="e"))
    a = apply_change(base, Change(kills={"route:iris": FLAG}))
    b = write(write(base))
    merged = merge_restrictive(b, a)
    assert merged.epoch not in ("e", "") and "route:iris" in merged.kills
    assert descends(merged, a) is True and descends(merged, b) is True
    assert write_generation(merged.writes[-1]) == merged.generation
    assert set(a.writes) | set(b.writes) <= set(merged.writes)
    assert descends(write(merged), a) is True  # and its successors


def test_a_cut_never_splits_a_generation() -> None:
    writes = ("1:x", "1:y", *(f"{g}:w" for g in range(2, MAX_WRITES + 1)))
    assert len(writes) == MAX_WRITES + 1
    kept = trim_writes(writes)
    assert all(write_generation(w) != 1 for w in kept) and len(kept) == MAX_WRITES - 1
    # so a document holding the dropped write at generation 1 is "cannot tell", not "fork"
    held = StateDoc(generation=1, epoch="e", writes=("1:x",))
    assert descends(StateDoc(generation=MAX_WRITES, epoch="e", writes=kept), held) is None
    assert trim_writes(writes[1:]) == writes[1:]
    # joined in order of generation (not of text: "10:" sorts before "9:")
    assert joined_writes(StateDoc(writes=("9:a", "10:b")), StateDoc(writes=("2:c", "9:a"))) \
        == ("2:c", "9:a", "10:b")


@pytest.mark.parametrize("bad", ["", "x:1", ":1", "-1:a", "99999999999999999999:a"])
def test_a_malformed_write_cannot_tell(bad: str) -> None:
    assert write_generation(bad) == -1
    held = StateDoc(generation=3, epoch="e", writes=("3:a",))
    assert descends(StateDoc(generation=4, epoch="e", writes=(bad, "4:b")), held) is None
    assert descends(held, StateDoc(generation=3, epoch="e", writes=(bad,))) is None


def test_a_commit_never_replaces_a_write_it_was_not_written_on() -> None:
    base = write(StateDoc(epoch="e"))
    a = apply_change(base, Change(kills={"route:iris": FLAG}))
    b = write(base, 9)  # the same generation, written on a promoted replica
    assert replaces_another(b, write(a)) is True
    assert replaces_another(a, write(a)) is False  # a successor
    assert replaces_another(b, merge_restrictive(b, a)) is False  # a re-seed that merged it
    assert replaces_another(base, write(a)) is False  # (an older document: the compare says)
    assert replaces_another(b.with_changes(writes=()), write(a)) is False  # cannot tell


def test_an_unkill_records_the_kill_it_lifted_and_a_reseed_keeps_both_sides() -> None:
    doc = apply_change(write(StateDoc(epoch="e")), Change(kills={"route:iris": FLAG}))
    g = doc.kills["route:iris"].generation
    assert doc.lifted == {}
    lifted = apply_change(doc, Change(kills={"route:iris": None}))
    assert lifted.lifted == {"route:iris": g}
    assert apply_change(lifted, Change(kills={"route:iris": None})).lifted == {"route:iris": g}
    assert StateDoc.from_json(lifted.to_json()) == lifted
    other = StateDoc(generation=9, epoch="x", writes=("9:x",), lifted={"route:iris": g + 5,
                                                                        "global": 3})
    assert joined_lifted(lifted, other) == {"route:iris": g + 5, "global": 3}
    assert merge_restrictive(other, lifted).lifted == {"route:iris": g + 5, "global": 3}
    many = StateDoc(epoch="e", writes=("1:a",), lifted={f"route:r{i}": i for i in range(300)})
    kept = joined_lifted(many)
    assert len(kept) == MAX_LIFTED and min(kept.values()) == 300 - MAX_LIFTED


def test_far_behind_a_document_without_a_kill_held_is_an_unkill_only_if_it_names_it() -> None:
    a = apply_change(write(StateDoc(epoch="e")), Change(kills={"route:iris": FLAG}))
    far = apply_change(a, Change(kills={"route:iris": None}))  # an unkill ...
    for n in range(MAX_WRITES + 1):  # ... then more writes than the window holds
        far = write(far, n)
    assert descends(far, a) is None and not lifts_unrecorded(a, far)
    branch = a.with_changes(kills={}, writes=a.writes[:-1], generation=a.generation - 1)
    for n in range(MAX_WRITES + 2):  # a branch that never had the kill, as far ahead
        branch = write(branch, n)
    assert descends(branch, a) is None and lifts_unrecorded(a, branch)
    assert not lifts_unrecorded(a, branch.with_changes(writes=()))  # an older version's
    # killed again (a newer flag): a lift of the older one is no unkill of it
    again = apply_change(far, Change(kills={"route:iris": FLAG}))
    assert lifts_unrecorded(again, write(far.with_changes(generation=again.generation)))
