"""The file store verifies and decodes a state file's bytes once: a poll of an unchanged
file (every sync interval, every instance) and the commit's read of the file this process
wrote answer from what was read or written last; a changed file (another worker's commit,
an edit) is verified again and decoded sharing what it keeps of the last. It verified and
decoded the whole document at every poll and every commit (found by the kill path's review:
`kill_instructions.py --routes 500 --stages localread,localpoll`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.kills import kill
from gateway.domain.statedoc import StateDoc, apply_change
from gateway.state.local import LocalStore
from gateway.state.signing import Key, Keyring
from gateway.state.store import decode_doc

pytestmark = pytest.mark.timeout(30)


class CountingKeyring(Keyring):
    """The keyring, counting the values it verifies (pure: no socket crossed)."""

    opened = 0

    def open(self, kind: bytes, data: bytes):  # type: ignore[no-untyped-def]
        type(self).opened += 1
        return super().open(kind, data)


def _keys() -> CountingKeyring:
    CountingKeyring.opened = 0
    return CountingKeyring(Key.of(b"k" * 32), context="local")


async def test_a_poll_of_an_unchanged_file_verifies_nothing_again(tmp_path: Path) -> None:
    keys = _keys()
    store = LocalStore(tmp_path / "state.json", keys=keys)
    await store.open()
    await store.commit(None, StateDoc(generation=1), None)
    gen1 = await store.load()
    assert gen1.doc is not None and gen1.doc.generation == 1
    # the commit's own read (nothing stored yet) and every load since: no verification
    assert CountingKeyring.opened == 0
    for _ in range(3):
        assert (await store.load()).doc is gen1.doc
        await store.poll()
    assert CountingKeyring.opened == 0
    # the next commit reads the file it wrote under its lock: nothing verified either
    doc2 = apply_change(gen1.doc, kill(gen1.doc, "route", "r", None, "alice", "t", ""))
    await store.commit("1", doc2, None)
    assert CountingKeyring.opened == 0
    assert (await store.load()).doc == doc2.with_changes(audit_head=gen1.doc.audit_head)


async def test_a_file_another_writer_changed_is_verified_and_read_whole(
        tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    keys = _keys()
    mine, other = LocalStore(path, keys=keys), LocalStore(path, keys=keys)
    await mine.open()
    await mine.commit(None, StateDoc(generation=1), None)
    base = (await mine.load()).doc
    assert base is not None
    doc2 = apply_change(base, kill(base, "route", "r", None, "bob", "t", ""))
    await other.commit("1", doc2, None)
    opened = CountingKeyring.opened
    got = (await mine.load()).doc
    assert CountingKeyring.opened == opened + 1  # another writer's bytes: verified
    assert got == decode_doc(keys.open(b"state", path.read_bytes())[0])
    assert got is not None and got.kills
    # an edit that keeps every byte but one is verified again, and refused
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 1
    path.write_bytes(bytes(raw))
    bad = await mine.load()
    assert bad.doc is None and bad.cause == "bad_signature"
    # the genuine bytes put back: read again (the refused ones were not remembered)
    path.write_bytes(bytes(raw[:-2]) + bytes([raw[-2] ^ 1]) + bytes(raw[-1:]))
    assert (await mine.load()).doc == got
