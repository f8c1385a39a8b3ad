"""A state file (and an audit log) named by a symbolic link, say into a persistent volume,
as `files.write_target` allows: the commit writes the file the link points to, but the
audit trim replaced the link itself with a regular file (atomic_write/put_in_place on the
name). Every later commit then landed beside the link, read back there by this host,
while the volume's file stayed as it was before the trim: a restart whose link points at
the volume again (a new container) read that stale state, the kills made since the trim
lost (found by review revmerge39 of the file store's writes). Real files and links."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.kills import kill
from gateway.domain.retention import TrimDecision, TrimWindow
from gateway.domain.statedoc import StateDoc, apply_change
from gateway.state.local import LocalStore
from gateway.state.signing import Key, Keyring

pytestmark = pytest.mark.timeout(30)

KEYS = Keyring(Key.of(b"k" * 32), context="local")


def _draft(n: int) -> AuditDraft:
    return AuditDraft("alice", "reload", {"n": n}, "test")


def _drop_two(window: TrimWindow) -> TrimDecision:
    return TrimDecision(2, AuditDraft("killgate", "audit.trim", {}, "retention"))


async def test_a_trim_keeps_the_links_and_later_kills_reach_the_volume(tmp_path: Path) -> None:
    volume, run = tmp_path / "volume", tmp_path / "run"
    volume.mkdir(mode=0o700)
    run.mkdir(mode=0o700)
    (volume / "audit.jsonl").touch()
    (run / "state.json").symlink_to(volume / "state.json")
    (run / "audit.jsonl").symlink_to(volume / "audit.jsonl")
    store = LocalStore(run / "state.json", run / "audit.jsonl", keys=KEYS)
    await store.open()
    await store.commit(None, StateDoc(generation=1), _draft(0))
    base = (await store.load()).doc
    assert base is not None
    for n in range(1, 5):  # (events that change no state: a reload's)
        doc = (await store.load()).doc
        assert doc is not None
        await store.commit(str(doc.generation), doc.with_changes(generation=doc.generation + 1),
                           _draft(n))
    decision, ck = await store.audit_trim(_drop_two, lambda *_: True)
    assert decision.remove == 2 and ck is not None
    assert (run / "state.json").is_symlink() and (run / "audit.jsonl").is_symlink()
    held = (await store.load()).doc
    assert held is not None
    killed = apply_change(held, kill(held, "route", "r", None, "alice", "t", ""))
    await store.commit(str(held.generation), killed, _draft(9))
    # a restart on the volume (the link made again, or the volume's file named itself)
    after = await LocalStore(volume / "state.json", volume / "audit.jsonl", keys=KEYS).load()
    assert after.doc is not None and after.doc.kills, after
    assert after.doc.generation == killed.generation
    lines = (volume / "audit.jsonl").read_text().splitlines()
    assert any('"audit.trim"' in line for line in lines) and '"n":9' in lines[-1]
