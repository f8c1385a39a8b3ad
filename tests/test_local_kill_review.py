"""Emergency local kills, hostile review (revlocal): a genuine journal across a key
rotation, and a sibling that reads the journal only after a merge of many entries.

The journal file is real (flock, fsync, atomic rename), the keys real HMAC keys.
"""

from __future__ import annotations

import os
import resource
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.state.localkills import LocalEntry, LocalKills
from gateway.state.signing import Key, Keyring

pytestmark = pytest.mark.timeout(30)

OLD = b"old-state-key-0123456789-abcdefghijklmnop"
NEW = b"new-state-key-0123456789-abcdefghijklmnop"


def _entry(n: int) -> LocalEntry:
    return LocalEntry.new("version", f"r{n}", "v2", "alice", "incident", "2026-01-01T00:00:00Z",
                          "gw-a", 3, True)


def test_a_journal_taken_under_the_previous_key_survives_rotation_step_3(
        tmp_path: Path) -> None:
    """Found by review: at rotation step 2 a journal signed with the old key was accepted
    but never re-signed, so step 3 (previous key removed) refused it whole: a genuine
    local kill taken while the store was down was no longer enforced, and the next local
    kill moved it aside (lost)."""
    path = tmp_path / "snap.json.local-kills"
    LocalKills(path, Keyring(Key.of(OLD), context="kgtest")).add(_entry(1))
    step2 = LocalKills(path, Keyring(Key.of(NEW), Key.of(OLD), context="kgtest"))
    assert [e.key for e in step2.read()] == ["version:r1:v2"] and step2.previous_key
    step2.reseal()
    assert not step2.previous_key
    step3 = LocalKills(path, Keyring(Key.of(NEW), context="kgtest"))
    assert [e.key for e in step3.read()] == ["version:r1:v2"], step3.refused
    assert step3.refused is None


def test_a_sibling_reading_after_a_big_merge_tells_every_merged_entry_from_a_dropped_one(
        tmp_path: Path) -> None:
    """Found by review: the file named only the last 64 merged entries while it may hold
    256: a sibling that read it once the merge of more than 64 was done took the rest
    for removed by hand (`local_kill_dropped`) and stopped enforcing them before it held
    the generation with the store's kill (a gap of up to a poll on the whole group)."""
    path = tmp_path / "snap.json.local-kills"
    keys = Keyring(Key.of(NEW), context="kgtest")
    merger = LocalKills(path, keys)
    for n in range(100):
        merger.add(_entry(n))
    sibling = LocalKills(path, keys)
    ids = {e.id for e in sibling.read()}
    assert len(ids) == 100
    for g, e in enumerate(merger.entries, start=10):  # (one at a time, as merge does)
        merger.remove({e.id}, g)
    assert sibling.changed() and sibling.read() == ()
    assert set(sibling.merged) == ids


def test_a_journal_that_cannot_be_read_for_a_moment_is_not_refused_nor_moved_aside(
        tmp_path: Path) -> None:
    """Found by review: any OSError reading the journal (out of file descriptors under
    load, an I/O error) counted as a refused file: every local kill of the group lifted
    (`local_kill_dropped`), and the next local kill moved the genuine file aside."""
    path = tmp_path / "snap.json.local-kills"
    keys = Keyring(Key.of(NEW), context="kgtest")
    LocalKills(path, keys).add(_entry(1))
    worker = LocalKills(path, keys)
    assert [e.key for e in worker.read()] == ["version:r1:v2"]
    LocalKills(path, keys).add(_entry(2))  # (a sibling's: the file changed)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    try:
        for fd in spare:  # (freed below the limit: nothing else may open meanwhile)
            os.close(fd)
        filler: list[int] = []
        while True:  # (every descriptor below the limit taken)
            try:
                filler.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        try:
            kept = worker.read()
            with pytest.raises(OSError):  # (nothing written: 503 local_kill_not_kept)
                worker.add(_entry(3))
        finally:
            for fd in filler:
                os.close(fd)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [e.key for e in kept] == ["version:r1:v2"] and worker.refused is None
    assert worker.unreadable is not None and worker.changed()  # (read again next poll)
    assert not (tmp_path / "snap.json.local-kills.refused").exists()
    assert [e.key for e in worker.read()] == ["version:r1:v2", "version:r2:v2"]


def test_a_local_kill_that_would_make_the_journal_unreadable_is_not_journaled(
        tmp_path: Path) -> None:
    """Found by review: reasons are 1024 characters, written as \\uXXXX escapes (6 bytes
    each): enough local kills wrote a journal over the 1 MiB read limit, which every
    worker then refused whole (every local kill lifted, the next one moved it aside)."""
    path = tmp_path / "snap.json.local-kills"
    keys = Keyring(Key.of(NEW), context="kgtest")
    journal = LocalKills(path, keys)
    n = 0
    with pytest.raises(ValueError, match="would be over"):
        for n in range(256):  # (n: how many went in)
            journal.add(replace(_entry(n), reason="\u732b" * 1024, actor="\u732c" * 1024))
    assert n > 50
    again = LocalKills(path, keys)
    assert len(again.read()) == n and again.refused is None
