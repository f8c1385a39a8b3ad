"""The audit mirror's file end under `FILE.lock` (state/mirrortail.py), over a local
store: files and locks only. The workers of `serve --workers N` each copy into one file;
a torn tail (a write cut by a crash or a full disk) is cut off under the lock, the last
line is verified there, and only events past it are appended: `killgate audit verify
--mirror` passes after."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.auditverify import verify_trail
from gateway.domain.statedoc import StateDoc
from gateway.state.local import LocalStore
from gateway.state.mirror import AuditMirror
from gateway.state.mirrortail import TailUnverified, append_after
from gateway.state.signing import Key, Keyring
from gateway.telemetry.metrics import Metrics
from tests.conftest import wait_until
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)

SECRET = "mirror-tail-key-0123456789-abcdefghij"
KEYS = Keyring(Key.of(SECRET.encode()))
KEY_ENV = "KILLGATE_TEST_MIRROR_TAIL_KEY"


async def _store(tmp: Path, n: int) -> LocalStore:
    store = LocalStore(tmp / "store.json", keys=KEYS)
    await store.open()
    await store.commit(None, StateDoc(), None)
    for i in range(n):
        await _kill(store, i)
    return store


async def _kill(store: LocalStore, i: int) -> None:
    await store.commit("0", StateDoc(), AuditDraft("alice", "kill", {"i": i}, f"r{i}"))


def _events(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


async def _verified_by_the_cli(path: Path) -> None:
    res = await acli("audit", "verify", "--mirror", str(path), "--key-env", KEY_ENV,
                     env={KEY_ENV: SECRET})
    assert res.returncode == 0, res.stdout + res.stderr


async def test_a_sibling_behind_a_torn_end_appends_only_what_is_past_the_last_line(
        tmp_path: Path) -> None:
    """The file holds e1..e3 and a torn fragment (a worker's append cut by a crash). A
    sibling worker behind (its memory ends at e1) appends e2, e3, e4: the torn line made
    the end unreadable and it trusted its memory, appending e2 and e3 a second time after
    the fragment (and `audit verify` failed on the fragment). Under the lock the fragment
    is cut, e3 (verified) is the end, and only e4 is appended."""
    store = await _store(tmp_path, 4)
    e1, e2, e3, e4 = await store.audit_events()
    path = tmp_path / "m.jsonl"
    assert append_after(path, [e1, e2, e3], None, KEYS.keys())[0] == [e1, e2, e3]
    with open(path, "ab") as f:  # noqa: ASYNC230 - a torn append, by hand
        f.write(json.dumps(e4).encode()[:40])
    done, at = await asyncio.to_thread(append_after, path, [e2, e3, e4], e1["hash"],
                                       KEYS.keys())
    assert (done, at) == ([e4], e3["hash"])
    assert [e["hash"] for e in _events(path)] == [e["hash"] for e in (e1, e2, e3, e4)]
    assert verify_trail(_events(path), None, KEYS.keys()).brk is None
    await _verified_by_the_cli(path)


async def test_a_last_line_that_does_not_verify_is_never_continued(tmp_path: Path) -> None:
    """The file's last line edited (its hash no longer matches): a writer whose memory
    ended at that hash appended after it, unchecked. Nothing is appended, and a mirror
    refuses (its alarm) rather than continue it."""
    store = await _store(tmp_path, 3)
    e1, e2, e3 = await store.audit_events()
    path = tmp_path / "m.jsonl"
    append_after(path, [e1, e2], None, KEYS.keys())
    edited = dict(e2, reason="nothing to see")
    path.write_text("".join(json.dumps(e) + "\n" for e in (e1, edited)))
    before = path.read_bytes()
    with pytest.raises(TailUnverified, match="does not verify"):
        await asyncio.to_thread(append_after, path, [e3], e2["hash"], KEYS.keys())
    assert path.read_bytes() == before
    mirror = AuditMirror(store, path, KEYS, Metrics(), 0.02)
    task = asyncio.create_task(mirror.run())
    try:
        await wait_until(lambda: mirror.refused is not None, 5, what="the refusal")
        assert "does not verify" in mirror.refused["problem"]
        assert path.read_bytes() == before
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_whole_event_that_lost_only_its_newline_is_kept(tmp_path: Path) -> None:
    store = await _store(tmp_path, 3)
    e1, e2, e3 = await store.audit_events()
    path = tmp_path / "m.jsonl"
    append_after(path, [e1], None, KEYS.keys())
    with open(path, "ab") as f:  # noqa: ASYNC230 - by hand
        f.write(json.dumps(e2).encode())
    assert append_after(path, [e2, e3], e1["hash"], KEYS.keys()) == ([e3], e2["hash"])
    assert [e["hash"] for e in _events(path)] == [e1["hash"], e2["hash"], e3["hash"]]


async def test_two_mirrors_on_a_torn_file_copy_each_event_once(tmp_path: Path) -> None:
    """Two workers' mirrors start on a file a crash left torn, and events keep coming:
    a mirror read the fragment as its last line and refused the file (the tamper alarm for
    a crash). The fragment is cut under the lock, both copy on, each event lands once, and
    `killgate audit verify --mirror` passes."""
    store = await _store(tmp_path, 3)
    path = tmp_path / "m.jsonl"
    evs = await store.audit_events()
    append_after(path, evs[:2], None, KEYS.keys())
    with open(path, "ab") as f:  # noqa: ASYNC230 - a torn append, by hand
        f.write(json.dumps(evs[2]).encode()[:-7])
    mirrors = [AuditMirror(store, path, KEYS, Metrics(), 0.01) for _ in range(2)]
    tasks = [asyncio.create_task(m.run()) for m in mirrors]
    try:
        for i in range(3, 12):
            await _kill(store, i)
            await asyncio.sleep(0.005)
        last = (await store.audit_events())[-1]["hash"]
        await wait_until(lambda: all(m.last_hash == last for m in mirrors), 10,
                         what="both mirrors at the trail's end")
        assert all(m.refused is None for m in mirrors), [m.refused for m in mirrors]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    got = [e["hash"] for e in _events(path)]
    assert got == [e["hash"] for e in await store.audit_events()]
    await _verified_by_the_cli(path)


_WRITER = """
import json, sys
from pathlib import Path
from gateway.state.mirrortail import append_after
path, batches = Path(sys.argv[1]), json.loads(sys.argv[2])
after = batches.pop(0)
for batch in batches:
    done, at = append_after(path, batch, after, {})
    after = batch[-1]["hash"]
"""


async def test_two_writer_processes_on_a_torn_file_append_each_event_once(
        tmp_path: Path) -> None:
    """Two processes (as `--workers 2`'s are) append the same events in batches of their
    own, each from its own memory of the end, to a file a crash left torn: each event lands
    once, in order, and the file verifies."""
    import sys

    from tests.conftest import ROOT

    store = await _store(tmp_path, 7)
    evs = await store.audit_events()
    path = tmp_path / "m.jsonl"
    append_after(path, evs[:1], None)
    with open(path, "ab") as f:  # noqa: ASYNC230 - a torn append, by hand
        f.write(json.dumps(evs[1]).encode()[:50])
    plans = [[evs[0]["hash"], evs[1:4], evs[4:]],
             [evs[0]["hash"], evs[1:2], evs[2:6], evs[6:]]]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, str(path), json.dumps(plan), cwd=str(ROOT))
        for plan in plans]
    assert [await asyncio.wait_for(p.wait(), 20) for p in procs] == [0, 0]
    assert [e["hash"] for e in _events(path)] == [e["hash"] for e in evs]
    await _verified_by_the_cli(path)


async def test_a_file_that_is_not_a_mirror_is_left_as_it_was(tmp_path: Path) -> None:
    """audit.mirror pointed at a file of something else (a typo in the path, another log)
    that does not end with a newline: its last partial line was cut off as a "torn tail"
    before the mirror refused it (found by review of mirrortail.py: bytes of a file not
    ours destroyed). Refused, and not one byte changed; the same for a file with no line
    at all."""
    store = await _store(tmp_path, 1)
    (e1,) = await store.audit_events()
    for name, text in (("notes.txt", b"first line\nsecond line, not ended"),
                       ("one.txt", b"a file of one line and no newline")):
        path = tmp_path / name
        path.write_bytes(text)
        with pytest.raises(TailUnverified, match="not a JSON event"):
            await asyncio.to_thread(append_after, path, [e1], None, KEYS.keys())
        assert path.read_bytes() == text


async def test_a_torn_tail_after_a_line_that_does_not_verify_is_kept_as_evidence(
        tmp_path: Path) -> None:
    """The last whole line edited, then a fragment: the fragment was cut before the
    refusal, changing a file under the tamper alarm (the operator's evidence). Refused with
    the file as it was."""
    store = await _store(tmp_path, 3)
    e1, e2, e3 = await store.audit_events()
    path = tmp_path / "m.jsonl"
    edited = dict(e2, reason="nothing to see")
    text = ("".join(json.dumps(e) + "\n" for e in (e1, edited))
            + json.dumps(e3)[:30]).encode()
    path.write_bytes(text)
    with pytest.raises(TailUnverified, match="does not verify"):
        await asyncio.to_thread(append_after, path, [e3], e2["hash"], KEYS.keys())
    assert path.read_bytes() == text
