"""The file store in a folder it cannot write: a commit (a re-seed at start, a kill) and a
read of the trail are StoreUnavailable, which every caller handles, saying which file. An
OSError there ended `killgate serve` with a traceback at its first re-seed (found running
the image as a non-root user on a read-only folder: the deployment review). A folder that
is a file stands for it here (root writes anywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreUnavailable
from gateway.state.local import LocalStore

pytestmark = pytest.mark.timeout(30)


async def test_a_commit_and_a_read_where_nothing_can_be_written_say_so(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("not a folder")
    store = LocalStore(tmp_path / "var" / "store.json")
    with pytest.raises(StoreUnavailable, match=r"cannot write .*store\.json\.lock"):
        await store.commit(None, StateDoc(generation=1), None)
    with pytest.raises(StoreUnavailable, match=r"cannot write .*store\.json\.lock"):
        await store.audit_newest(10)
    with pytest.raises(StoreUnavailable, match=r"cannot write .*store\.json\.lock"):
        await store.idem_claim("k", {"a": 1}, 60)


async def test_an_idempotency_table_it_cannot_read_or_write_says_so(tmp_path: Path) -> None:
    """The lock opens (the folder was usable when the store started) but the table cannot
    be read or replaced (a full disk, a folder made read-only since; a folder in its place
    stands for it): an OSError here was a 500 with a traceback, and from `idem_set` after
    a kill was applied (its callers suppress StateError only)."""
    store = LocalStore(tmp_path / "store.json")
    await store.open()
    (tmp_path / "store.json.idempotency.json").mkdir()
    with pytest.raises(StoreUnavailable, match=r"store\.json\.idempotency\.json"):
        await store.idem_claim("k", {"a": 1}, 60)
    with pytest.raises(StoreUnavailable, match=r"store\.json\.idempotency\.json"):
        await store.idem_set("k", {"a": 1}, 60)


async def test_an_audit_file_it_cannot_read_says_so(tmp_path: Path) -> None:
    """`state.audit_path` elsewhere (another volume) that this process cannot read (a file
    left by a run as root; a folder in its place stands for it): the admin API's trail
    read ended in a 500 with a traceback (an OSError), not 503 naming the file."""
    audit = tmp_path / "audit.jsonl"
    audit.mkdir()
    store = LocalStore(tmp_path / "store.json", audit)
    await store.open()
    with pytest.raises(StoreUnavailable, match=r"cannot read .*audit\.jsonl"):
        await store.audit_newest(10)
    with pytest.raises(StoreUnavailable, match=r"cannot read .*audit\.jsonl"):
        await store.audit_page(10, None)


async def test_a_state_file_larger_than_any_document_is_refused_unread(tmp_path: Path) -> None:
    """The file store read its state file whole at every poll (every instance, every
    poll_interval), whatever its size: a file of a few gigabytes made each poll read it all
    into memory. One over the 16 MiB a document may hold is refused unread (as redis's),
    and a commit (the re-seed) replaces it."""
    path = tmp_path / "store.json"
    with path.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # (sparse: no disk used)
    store = LocalStore(path)
    await store.open()
    got = await store.load()
    assert got.doc is None and got.refused is None
    assert got.problem is not None and "not read" in got.problem, got.problem
    await store.commit(got.token, StateDoc(generation=2), None)
    assert (await store.load()).doc == StateDoc(generation=2)


async def test_heartbeat_and_idempotency_files_not_of_ours_are_skipped(tmp_path: Path) -> None:
    """A heartbeat file or idempotency table that is JSON but not what the store writes (a
    list, a string for the time, a time no float holds; edited, restored from elsewhere)
    raised AttributeError/TypeError out of the read: /v1/status and every receipt answered
    500, and with the table every write carrying an Idempotency-Key (every `killgate kill`)
    did, until someone fixed the file. They are skipped (dropped: the table is rewritten)."""
    store = LocalStore(tmp_path / "store.json")
    await store.open()
    await store.heartbeat("me", 3)
    for name, body in (("a", "[]"), ("b", '{"seen": "x"}'), ("c", '{"seen": 1e400}'),
                       ("d", '{"seen": 1, "generation": [1]}'), ("e", "null")):
        (store.instances_dir / f"{name}.json").write_text(body)
    assert set(await store.fleet(5.0)) == {"me"}
    assert await store.live_instances(5.0) == {"me": 3}
    table = tmp_path / "store.json.idempotency.json"
    for body in ("[]", '{"k": 1}', '{"k": {"expires": "x"}}'):
        table.write_text(body)
        assert await store.idem_claim("k", {"a": 1}, 60) is None  # (claimed: ours now)
        assert await store.idem_claim("k", {"a": 2}, 60) == {"a": 1}


@pytest.mark.parametrize("torn", [b'{"id": "x", "hash', b"[1]\n"])
async def test_an_audit_file_whose_last_line_is_no_event_still_takes_changes(
        tmp_path: Path, torn: bytes) -> None:
    """The file store chained each event after the audit file's last line. A last line that
    is no event (a write torn by a power loss, an edit) made every later change fail: 503
    'cannot append to the audit log' for every kill (a list: a TypeError, 500), until
    someone edited the file. The event now continues the head the signed state file
    anchors; the line stays, on a line of its own, for `audit verify` to report."""
    from gateway.domain.audit import AuditDraft

    store = LocalStore(tmp_path / "store.json")
    await store.open()
    draft = AuditDraft("alice", "kill", {"scope": "global"}, "r")
    first = await store.commit(None, StateDoc(generation=1), draft)
    assert first is not None
    audit = tmp_path / "store.json.audit.jsonl"
    audit.write_bytes(audit.read_bytes() + torn)
    second = await store.commit("1", StateDoc(generation=2), draft)
    assert second is not None and second["prev_hash"] == first["hash"]
    lines = (tmp_path / "store.json.audit.jsonl").read_bytes().splitlines()
    assert len(lines) == 3 and lines[1] == torn.rstrip(b"\n")
    assert (await store.load()).doc.audit_head == second["hash"]


async def test_a_state_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO at `state.path` was opened for reading at every poll, in a thread, waiting
    for a writer for ever: the sync loop hung there and every poll tied up one more
    thread. It is StoreUnavailable at once, naming the file (a daemon thread here: a
    reader left waiting must not outlive the test)."""
    import os
    import threading

    path = tmp_path / "store.json"
    os.mkfifo(path, 0o600)
    store = LocalStore(path)
    got: list[BaseException] = []

    def read() -> None:
        try:
            store._read()
        except BaseException as exc:  # noqa: BLE001 - what it raised is the point
            got.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(2.0)
    if reader.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(2.0)
        pytest.fail("reading a FIFO at state.path waited for a writer")
    assert len(got) == 1 and isinstance(got[0], StoreUnavailable), got
    assert "store.json: not a regular file" in str(got[0])


async def test_a_state_file_that_is_a_link_is_written_through_it(tmp_path: Path) -> None:
    """`state.path` a link into a persistent volume: the first commit replaced the link
    with a file beside it, and a restart read the file it pointed to, without every change
    since. A commit now lands in that file and the link stays a link."""
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o700)
    link = tmp_path / "store.json"
    link.symlink_to(volume / "store.json")
    store = LocalStore(link)
    await store.open()
    await store.commit(None, StateDoc(generation=1), None)
    await store.commit("1", StateDoc(generation=2), None)
    assert link.is_symlink()
    got = await LocalStore(volume / "store.json").load()
    assert got.doc is not None and got.doc.generation == 2
