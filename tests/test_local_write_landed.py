"""A state file that took its place, then failed the folder's fsync (EIO on the folder, a
full journal): the commit cut its audit event off the trail and raised StoreUnavailable,
yet the new file was in place, read by every worker and by the next restart. The kill was
in force on every instance while the caller was told it failed, with no audit event, and
the signed state anchored the cut event's hash: `audit verify` reported events cut off the
end (found by review revmerge39 of the file store's commit). Now the event is cut only when
the file did not take its place; one that did is the change made (its event kept, what was
written remembered, a warning logged). Real files; the fault: the replace done, then an
EIO, as the folder's fsync would raise it."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.auditverify import verify_trail
from gateway.domain.kills import kill
from gateway.domain.statedoc import StateDoc, apply_change
from gateway.errors import StoreUnavailable
from gateway.state import local
from gateway.state.files import atomic_write
from gateway.state.local import LocalStore
from gateway.state.signing import Key, Keyring

pytestmark = pytest.mark.timeout(30)

KEYS = Keyring(Key.of(b"k" * 32), context="local")


def _draft(what: str) -> AuditDraft:
    return AuditDraft("alice", "kill", {"route": what}, "test")


def _trail(store: LocalStore) -> list[dict[str, object]]:
    return [json.loads(line) for line in store.audit_path.read_text().splitlines()]


async def _at_gen1(tmp_path: Path) -> tuple[LocalStore, StateDoc]:
    store = LocalStore(tmp_path / "state.json", keys=KEYS)
    await store.open()
    await store.commit(None, StateDoc(generation=1), _draft("first"))
    base = (await store.load()).doc
    assert base is not None
    return store, apply_change(base, kill(base, "route", "r", None, "alice", "t", ""))


async def test_a_file_in_place_whose_folder_fsync_failed_keeps_its_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    store, doc2 = await _at_gen1(tmp_path)

    def replaced_then_eio(path: Path, data: bytes, mode: int | None = None) -> None:
        atomic_write(path, data, mode)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local, "atomic_write", replaced_then_eio)
    stored: list[StateDoc] = []
    with caplog.at_level(logging.WARNING, "killgate.state"):
        event = await store.commit("1", doc2, _draft("r"), on_stored=stored.append)
    assert event is not None and stored and stored[0].kills
    said = [r for r in caplog.records if r.getMessage() == "state_file_not_durable"]
    assert len(said) == 1 and "Input/output error" in str(said[0].__dict__["kg_fields"]), said
    # what every other worker (and a restart) reads: the kill, anchoring its event
    other = await LocalStore(store.path, keys=KEYS).load()
    assert other.doc is not None and other.doc.generation == 2 and other.doc.kills
    trail = _trail(store)
    assert trail[-1]["hash"] == event["hash"] == other.doc.audit_head
    report = verify_trail(trail, other.doc.audit_head)
    assert report.brk is None, report.brk


async def test_a_file_that_did_not_take_its_place_cuts_its_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, doc2 = await _at_gen1(tmp_path)
    before = store.audit_path.read_bytes()

    def eio(path: Path, data: bytes, mode: int | None = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local, "atomic_write", eio)
    with pytest.raises(StoreUnavailable, match=r"cannot write .*state\.json: No space"):
        await store.commit("1", doc2, _draft("r"))
    assert store.audit_path.read_bytes() == before  # (the change was not made)
    got = await LocalStore(store.path, keys=KEYS).load()
    assert got.doc is not None and got.doc.generation == 1 and not got.doc.kills


async def test_a_trim_whose_state_file_took_its_place_keeps_the_trimmed_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same in the audit trim: its state file (anchoring the checkpoint) renamed into
    place, then an EIO: the audit log was put back as it was, ending before the checkpoint
    the state anchors (read as events cut off the end)."""
    from gateway.domain.retention import TrimDecision, TrimWindow
    from gateway.state import localtrim

    store, _ = await _at_gen1(tmp_path)
    for n in range(4):
        doc = (await store.load()).doc
        assert doc is not None
        await store.commit(str(doc.generation), doc.with_changes(generation=doc.generation + 1),
                           _draft(f"r{n}"))

    def replaced_then_eio(path: Path, data: bytes, mode: int | None = None) -> None:
        atomic_write(path, data, mode)
        raise OSError(errno.EIO, "Input/output error")

    def drop_two(window: TrimWindow) -> TrimDecision:
        return TrimDecision(2, AuditDraft("killgate", "audit.trim", {}, "retention"))

    monkeypatch.setattr(localtrim, "atomic_write", replaced_then_eio)
    decision, ck = await store.audit_trim(drop_two, lambda *_: True)
    assert decision.remove == 2 and ck is not None
    got = await LocalStore(store.path, keys=KEYS).load()
    assert got.doc is not None and got.doc.audit_head == ck["hash"]
    trail = _trail(store)
    assert trail[-1]["hash"] == ck["hash"] and len(trail) == 4, trail
    left = [n for n in os.listdir(tmp_path) if n.endswith((".tmp", ".tmp.old"))]
    assert not left, left  # (nothing left beside them)
