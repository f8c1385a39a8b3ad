"""The audit mirror (state/mirror.py) over a local store: files only, no sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.domain.audit import AuditDraft, seal
from gateway.domain.auditverify import verify_trail
from gateway.domain.statedoc import StateDoc
from gateway.state.local import LocalStore
from gateway.state.mirror import AuditMirror
from gateway.state.signing import Key, Keyring
from gateway.telemetry.metrics import Metrics
from tests.conftest import wait_until

KEYS = Keyring(Key.of(b"m" * 32))


async def _store(tmp: Path, n: int) -> LocalStore:
    store = LocalStore(tmp / "store.json", keys=KEYS)
    await store.open()
    await store.commit(None, StateDoc(), None)
    for i in range(n):
        await store.commit("0", StateDoc(), AuditDraft("alice", "kill", {"i": i}, f"r{i}"))
    return store


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _caught_up(mirror: AuditMirror, store: LocalStore) -> bool:
    """The mirror copied the whole audit file and saved its position (the cursor is the
    file's size, and the hash of the event before it): idle now. Its lines show before that
    (appended, then the cursor written, each fsynced in a thread), and a task cancelled in
    between has not saved the cursor."""
    try:
        cursor = mirror.cursor_file.read_text().strip()
    except FileNotFoundError:
        return False
    return cursor.split(":")[0] == str(store.audit_path.stat().st_size)


async def test_copies_verified_events_and_refuses_a_forged_one(tmp_path: Path) -> None:
    store = await _store(tmp_path, 3)
    metrics, alarms = Metrics(), []
    mirror = AuditMirror(store, tmp_path / "m.jsonl", KEYS, metrics, 0.02, alarms.append)
    task = asyncio.create_task(mirror.run())
    try:
        await wait_until(lambda: _caught_up(mirror, store), 15, what="the copy")
        assert len(_lines(mirror.path)) == 3
        assert verify_trail(_lines(mirror.path), None, KEYS.keys()).brk is None
        # someone appends a linked but unkeyed event to the store's audit file
        last = _lines(store.audit_path)[-1]
        forged = json.dumps(seal({"id": "forged", "action": "unkill"}, last["hash"]))
        with open(store.audit_path, "a") as f:  # noqa: ASYNC230 - appended, never truncated
            f.write(forged + "\n")
        await wait_until(lambda: mirror.refused is not None, 15, what="the refusal")
        assert "no MAC" in mirror.refused["problem"] and mirror.refused["event_id"] == "forged"
        assert metrics.get("killgate_audit_mirror_refused_total") == 1
        assert metrics.get("killgate_audit_mirror_ok") == 0
        assert [a["event"] for a in alarms] == ["killgate.audit_mirror_refused"]
        assert len(_lines(mirror.path)) == 3  # nothing after the last verified line
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_resumes_without_duplicates_and_refuses_a_file_that_does_not_verify(
        tmp_path: Path) -> None:
    store = await _store(tmp_path, 2)
    path = tmp_path / "m.jsonl"
    for cursor_lost in (False, True):
        mirror = AuditMirror(store, path, KEYS, Metrics(), 0.02)
        task = asyncio.create_task(mirror.run())
        await wait_until(lambda mirror=mirror: _caught_up(mirror, store), 15, what="the copy")
        assert len(_lines(path)) == len(_lines(store.audit_path))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.commit("0", StateDoc(), AuditDraft("bob", "kill", {}, "more"))
        if cursor_lost:
            path.with_name(path.name + ".cursor").unlink()
    mirror = AuditMirror(store, path, KEYS, Metrics(), 0.02)
    task = asyncio.create_task(mirror.run())
    await wait_until(lambda: _caught_up(mirror, store), 15, what="the rest")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [e["hash"] for e in _lines(path)] == [e["hash"] for e in _lines(store.audit_path)]
    # the mirror's own last line edited: it is not continued
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:-1], lines[-1].replace('"more"', '"less"')]) + "\n")
    mirror = AuditMirror(store, path, KEYS, Metrics(), 0.02)
    task = asyncio.create_task(mirror.run())
    await wait_until(lambda: mirror.refused is not None, 15, what="the refusal")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert "own last line does not verify" in mirror.refused["problem"]


async def test_a_mirror_file_that_cannot_be_opened_is_shown_and_tried_again(
        tmp_path: Path) -> None:
    """state.audit_mirror under a file (or a folder it may not read): the mirror's task died
    at its first read, /v1/status kept saying ok with nothing copied, and no metric moved
    (hostile config review). Now it is shown, counted, and tried again until it works."""
    store = await _store(tmp_path, 2)
    blocker = tmp_path / "audit"
    blocker.write_text("")  # a file where the mirror's folder should be
    metrics = Metrics()
    mirror = AuditMirror(store, blocker / "m.jsonl", KEYS, metrics, 0.02)
    task = asyncio.create_task(mirror.run())
    try:
        await wait_until(lambda: metrics.get("killgate_audit_mirror_failures_total") >= 1, 5,
                         what="the failure counted")
        assert not task.done()
        st = mirror.status()
        assert st["ok"] is False and "Not a directory" in st["error"], st
        assert metrics.get("killgate_audit_mirror_ok") == 0
        blocker.unlink()
        blocker.mkdir()
        await wait_until(lambda: _caught_up(mirror, store), 15, what="the copy")
        assert len(_lines(mirror.path)) == 2 and mirror.status()["ok"] is True
        assert metrics.get("killgate_audit_mirror_ok") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_disk_full_for_a_moment_is_retried_not_taken_for_a_broken_trail(
        tmp_path: Path) -> None:
    """A batch whose append failed (the disk full: /dev/full here) had moved the mirror's
    idea of its last hash on anyway: the same batch, fetched again, then "did not continue
    the mirror", and a disk full for a moment raised the tamper alarm (the hook, the
    refused counter) and stopped copying for good. It is a failure, counted and retried."""
    store = await _store(tmp_path, 3)
    path = tmp_path / "m.jsonl"
    path.symlink_to("/dev/full")
    metrics, alarms = Metrics(), []
    mirror = AuditMirror(store, path, KEYS, metrics, 0.02, alarms.append)
    task = asyncio.create_task(mirror.run())
    try:
        await wait_until(lambda: metrics.get("killgate_audit_mirror_failures_total") >= 1, 5,
                         what="an append to fail")
        path.unlink()  # (room again: a file of its own)
        await wait_until(lambda: _caught_up(mirror, store), 5, what="the copy")
        assert mirror.refused is None and alarms == [], (mirror.refused, alarms)
        assert len(_lines(path)) == 3
        assert verify_trail(_lines(path), None, KEYS.keys()).brk is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_line_torn_by_a_partial_write_is_ended_before_the_next_append(
        tmp_path: Path) -> None:
    """A write torn part way (a power loss, a disk full mid-write) leaves the mirror ending
    in a fragment without its newline; the next event was appended to that fragment, one
    line of garbage where the event should be (found by review, impleft item 5). Then the
    fragment was kept as a line of its own, which `audit verify` refuses; now it is cut
    off under the lock before the next append (state/mirrortail.py; impstate2)."""
    store = await _store(tmp_path, 2)
    path = tmp_path / "m.jsonl"
    mirror = AuditMirror(store, path, KEYS, Metrics(), 0.02)
    task = asyncio.create_task(mirror.run())
    try:
        await wait_until(lambda: _caught_up(mirror, store), 15, what="the copy")
        with open(path, "ab") as f:  # noqa: ASYNC230 - a torn append, by hand
            f.write(b'{"id":"torn","act')
        await store.commit("0", StateDoc(),
                           AuditDraft("alice", "kill", {"i": 9}, "after the tear"))
        await wait_until(lambda: _caught_up(mirror, store), 15, what="the next copy")
        lines = path.read_bytes().splitlines()
        assert b'{"id":"torn","act' not in path.read_bytes(), lines[-2:]
        assert json.loads(lines[-1])["reason"] == "after the tear"
        assert verify_trail(_lines(path), None, KEYS.keys()).brk is None
        assert mirror.refused is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
