"""A snapshot write marked of unverified origin never replaces the same document written
unmarked (found by review: impvouch fixed one race at its source, where a marked write of
the document the fleet had just vouched for landed after the unmarked one; the file then
said "unverified origin" of vouched state, and a restart refused to write it over the
fleet's document). The class is closed at the file: `SnapshotFile._write` keeps an
unmarked file holding the same generation and audit_seq. Real files, real flock."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.statedoc import StateDoc
from gateway.state.snapshot import SnapshotFile
from tests.test_snapshot import FLAG, RING

pytestmark = pytest.mark.timeout(10)

ORIGIN = {"why": "a snapshot that did not verify: kills only", "epochs": ["e"]}


def _read(path: Path, generation: int) -> SnapshotFile:
    snap = SnapshotFile(path, RING)
    got = snap.read()
    assert got is not None and got.generation == generation
    return snap


async def test_a_marked_write_never_replaces_the_same_document_unmarked(
        tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    vouched, late = SnapshotFile(path, RING), SnapshotFile(path, RING)
    doc = StateDoc(generation=6, epoch="e", kills={"version:iris:v2": FLAG})
    assert await vouched.write(doc)  # (the fleet vouched for it: unmarked)
    assert await late.write(doc, ORIGIN)  # (the same document, marked, landing after)
    assert _read(path, 6).unverified_origin is None
    # a newer marked document still replaces it; the same one unmarked lifts the mark
    newer = doc.with_changes(generation=7)
    assert await late.write(newer, ORIGIN)
    assert _read(path, 7).unverified_origin == ORIGIN["why"]
    assert await late.write(newer, ORIGIN)  # (marked over marked: written, as ever)
    assert _read(path, 7).unverified_origin == ORIGIN["why"]
    assert await vouched.write(newer)
    assert _read(path, 7).unverified_origin is None
