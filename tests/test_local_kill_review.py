"""Emergency local kills, hostile review (revlocal): a genuine journal across a key
rotation, and a sibling that reads the journal only after a merge of many entries.

The journal file is real (flock, fsync, atomic rename), the keys real HMAC keys.
"""

from __future__ import annotations

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
