"""A break-glass write whose commit's answer was lost is counted once a state naming it is
in force on the instance that made it, even when a document of another branch of the
history (the store failed over to a replica that missed the write, or was restored from a
backup, and someone wrote on it) was in force there first and the re-seed that merges the
two (it keeps both sides' writes, domain/branches.py) brings it in later. Found by review
(revmerge30): `Unanswered` stopped watching at the first document at the write's
generation that did not name it ("the document in force only moves on"), so a use then in
force through the merge was never counted nor logged. The watch reads the document in
force (an in-process port, no socket): driven here as the state layer would move it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from gateway.admin import breakglass
from gateway.admin.actions import Intent
from gateway.domain.statedoc import StateDoc
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(10)

INTENT = Intent("unkill", {"scope": "global", "route": None, "version": None}, {}, "over",
                "alice", "rid-1", "10.0.0.9")


@dataclass
class _InForce:
    doc: StateDoc
    loaded: object = None


@dataclass
class _Counters:
    seen: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def inc(self, name: str, labels: tuple[str, ...] = (), by: float = 1.0,
            label_names: tuple[str, ...] = ()) -> None:
        self.seen.append((name, labels))


def _doc(generation: int, *writes: str) -> StateDoc:
    return StateDoc().with_changes(generation=generation, writes=writes)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breakglass, "WATCH_STEP", 0.005)


async def test_a_use_merged_in_after_another_branch_is_counted(
        fast: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "killgate")
    held = _InForce(_doc(6, "5:aa", "6:bb"))
    counters = _Counters()
    watch = breakglass.Unanswered(held, counters)  # type: ignore[arg-type]
    watch.watch("7:cc", 7, INTENT, 2, "10.0.0.9", "ev-1")
    # another branch took generation 7 (a promoted replica that missed the write) ...
    held.doc = _doc(7, "5:aa", "6:bb", "7:dd")
    await asyncio.sleep(0.05)
    assert counters.seen == []  # (not in force: not counted)
    # ... and the re-seed that merges both branches holds it: in force after all
    held.doc = _doc(8, "5:aa", "6:bb", "7:cc", "7:dd", "8:ee")
    await wait_until(lambda: counters.seen == [("killgate_break_glass_total", ("unkill",))],
                     2, 0.01, "the use, counted once the merge is in force")
    await asyncio.sleep(0.05)
    assert len(counters.seen) == 1
    assert [r.getMessage() for r in caplog.records] == ["break_glass"]
    await watch.stop()
    assert not watch.pending


async def test_one_never_in_force_is_neither_counted_nor_unresolved(
        fast: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "killgate")
    monkeypatch.setattr(breakglass, "WATCH_FOR", 0.1)
    held = _InForce(_doc(6, "5:aa", "6:bb"))
    counters = _Counters()
    watch = breakglass.Unanswered(held, counters)  # type: ignore[arg-type]
    watch.watch("7:cc", 7, INTENT, 2, "10.0.0.9", "ev-1")
    held.doc = _doc(7, "5:aa", "6:bb", "7:dd")
    await wait_until(lambda: not watch.pending, 2, 0.01, "the watch, over")
    assert counters.seen == []
    assert caplog.records == []  # (settled: another commit took its generation)


async def test_one_never_settled_is_said_unresolved(
        fast: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "killgate")
    held = _InForce(_doc(6, "5:aa", "6:bb"))
    counters = _Counters()
    watch = breakglass.Unanswered(held, counters)  # type: ignore[arg-type]
    watch.watch("7:cc", 7, INTENT, 2, "10.0.0.9", "ev-1")
    await asyncio.sleep(0.03)
    await watch.stop()
    assert counters.seen == []
    assert [r.getMessage() for r in caplog.records] == ["break_glass_unresolved"]


async def test_the_watches_are_bounded(
        fast: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A script retrying a break-glass write without its key through a store that loses
    every answer: each lost write was watched by a task of its own, for 10 minutes,
    without bound (found by review, revmerge30). One task watches them all, at most
    MAX_WATCHED; one past that is said unresolved at once."""
    caplog.set_level(logging.INFO, "killgate")
    monkeypatch.setattr(breakglass, "MAX_WATCHED", 3)
    held = _InForce(_doc(6, "5:aa", "6:bb"))
    counters = _Counters()
    watch = breakglass.Unanswered(held, counters)  # type: ignore[arg-type]
    before = len(asyncio.all_tasks())
    for n in range(5):
        watch.watch(f"7:c{n}", 7, INTENT, 2, "10.0.0.9", f"ev-{n}")
    assert len(asyncio.all_tasks()) == before + 1 and len(watch.pending) == 3
    assert [r.getMessage() for r in caplog.records] == ["break_glass_unresolved"] * 2
    assert "3 others are watched already" in caplog.records[0].kg_fields["detail"]
    held.doc = _doc(7, "5:aa", "6:bb", "7:c1")  # (one of them landed)
    await wait_until(lambda: len(counters.seen) == 1, 2, 0.01, "the one that landed, counted")
    assert len(watch.pending) == 2  # (the others: another commit took their generation)
    await watch.stop()
    assert not watch.pending and len(counters.seen) == 1
    assert [r.getMessage() for r in caplog.records].count("break_glass_unresolved") == 2
