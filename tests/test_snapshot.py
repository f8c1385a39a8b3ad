"""state/snapshot.py without a gateway: a file it cannot trust gives its kills only (and
they are adopted at start), a signed file of its own owner is read whole."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from gateway.control.table import TableHolder
from gateway.domain.statedoc import KillFlag, RouteOverride, StateDoc
from gateway.state.signing import Key, Keyring
from gateway.state.snapshot import SnapshotFile
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_keyed_audit import H

FLAG = KillFlag("version", "iris", "v2", "ops", "bad", "2026-01-01T00:00:00.000Z", 7)
DOC = StateDoc(generation=10 ** 12, epoch="e", kills={"version:iris:v2": FLAG},
               overrides={"iris": RouteOverride("v2", {"v1": 0.0, "v2": 100.0}, "mallory", "x",
                                                "2026-01-01T00:00:00.000Z", "promote")})
RING = Keyring(Key.of(b"k" * 32), context="kgtest:")


def _holder(tmp_path: Path) -> TableHolder:
    from gateway.configfile import load_config

    return TableHolder(load_config(write_config(tmp_path, two_versions(1, 2))),
                       state_unknown=True)


def test_an_unsigned_file_under_a_signing_key_gives_its_kills_only(tmp_path: Path) -> None:
    """A file from before state signing: a migration, so its kills are kept and adopted
    (a document at generation 0 would be ignored by an instance that just started), its
    overrides and its generation are not believed."""
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(DOC.to_json()))
    path.chmod(0o600)
    got = SnapshotFile(path, RING).read()
    assert got is not None
    assert got.kills == DOC.kills and got.overrides == {} and got.generation == 1
    holder = _holder(tmp_path)
    assert holder.apply_doc(got) and set(holder.doc.kills) == {"version:iris:v2"}


def test_a_file_others_may_write_gives_its_kills_only(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(DOC.to_json()))  # no signing key: a local store
    path.chmod(0o666)
    got = SnapshotFile(path, Keyring(None)).read()
    assert got is not None
    assert got.kills == DOC.kills and got.overrides == {} and got.generation == 1
    path.chmod(0o600)
    whole = SnapshotFile(path, Keyring(None)).read()
    assert whole == DOC  # its owner's own file: believed whole


def test_the_temporary_file_of_a_write_is_never_a_link_someone_planted(tmp_path: Path) -> None:
    """The snapshot (and the local store) is written to a temporary file beside it, then
    renamed. Its name was `.<name>.<pid>.tmp`, opened without O_EXCL: in a folder another
    user may write (a snapshot_path under a shared folder), a link planted at that name made
    killgate overwrite the file it points to with a snapshot. Each write now creates a file
    of its own (O_EXCL, a random name)."""
    import os

    from gateway.state.files import atomic_write

    victim = tmp_path / "victim"
    victim.write_text("precious")
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "snapshot.json"
    for pid in {os.getpid(), *range(os.getpid() - 3, os.getpid() + 4)}:
        (shared / f".snapshot.json.{pid}.tmp").symlink_to(victim)
    atomic_write(target, b"the document", 0o600)
    assert victim.read_text() == "precious"
    assert target.read_bytes() == b"the document" and not target.is_symlink()
    assert (target.stat().st_mode & 0o777) == 0o600


async def test_an_older_document_handed_over_later_is_not_written_over_a_newer(
        tmp_path: Path) -> None:
    """A swap's snapshot is handed over once its ack is sent (sync._after_apply, a round
    trip later, longer with a slow store); a full sync's at once. The older swap's came
    last and was written last: the file went back to a generation without the newer
    document's kill, which a start without the store then enforced as last-known."""
    path = tmp_path / "snapshot.json"
    snap = SnapshotFile(path, RING)
    newer = StateDoc(generation=6, epoch="e", kills={"version:iris:v2": FLAG})
    snap.soon(newer)
    snap.soon(StateDoc(generation=5, epoch="e"))
    await snap.flush()
    got = SnapshotFile(path, RING).read()
    assert got is not None and got.generation == 6 and set(got.kills) == {"version:iris:v2"}


@pytest.mark.timeout(30)
async def test_a_snapshot_that_cannot_be_written_is_shown_and_counted(
        tmp_path: Path, backends, session) -> None:
    """The snapshot is what keeps a kill through a store that lost it and a restart. A
    write that failed (a full or read-only volume, a folder gone) was one log line: the
    status and metrics said nothing while every later kill was missing from the file a
    restart would enforce. Now `store.snapshot` in /v1/status says so (ok false, the error,
    the generation the file holds) and killgate_state_snapshot_write_failures_total counts
    it; the next write that lands clears it."""
    folder = tmp_path / "snap"
    p = await backends(echo_app("v1"))
    state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
             f"  snapshot_path: {folder}/snapshot.json\n  poll_interval: 50ms\n")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    kill = {"scope": "route", "route": "iris", "reason": "r"}
    async with running_gateway(cfg) as g:
        await wait_until(lambda: (folder / "snapshot.json").exists(), 5, what="a snapshot")
        def replaced() -> bool:  # (a snapshot write may be under way: its temporary file
            # vanishes mid-rmtree, or the folder is there again; try again)
            try:
                shutil.rmtree(folder)
                folder.write_text("not a folder")  # (what a volume gone read-only refuses too)
            except OSError:
                return False
            return True

        await wait_until(replaced, 5, 0.01, "the snapshot's folder replaced by a file")
        async with session.post(g.admin + "/v1/kill", headers=H, json=kill) as r:
            assert r.status == 200, await r.text()
            generation = (await r.json())["generation"]

        async def snapshot_status() -> dict:
            async with session.get(g.admin + "/v1/status", headers=H) as r:
                return (await r.json())["store"]["snapshot"]

        async def failed() -> bool:
            return not (await snapshot_status())["ok"]

        await wait_until(failed, 5, what="the failed write shown")
        shown = await snapshot_status()
        assert shown["generation"] is not None and shown["generation"] < generation, shown
        assert str(folder) in shown["error"], shown
        assert g.gw.metrics.get("killgate_state_snapshot_write_failures_total") >= 1
        # ... and a gauge says so until a write lands (no write is tried again before the
        # next change, so the counter moves once: an alert on its increase would resolve)
        async with session.get(g.admin + "/metrics") as r:
            assert "\nkillgate_state_snapshot_failing 1.0\n" in await r.text()
        folder.unlink()
        async with session.post(g.admin + "/v1/unkill", headers=H, json=kill) as r:
            assert r.status == 200, await r.text()
            generation = (await r.json())["generation"]

        async def written() -> bool:
            return (await snapshot_status())["generation"] == generation

        await wait_until(written, 5, what="the next write landed")
        assert (await snapshot_status())["ok"]
        async with session.get(g.admin + "/metrics") as r:
            assert "\nkillgate_state_snapshot_failing 0.0\n" in await r.text()


def test_a_snapshot_larger_than_any_document_is_refused_unread(tmp_path: Path) -> None:
    """The snapshot was read whole at the start, whatever its size: a file of a few
    gigabytes (someone who may write it, a disk error) made every start read it all into
    memory (on a pod with a 1 GiB limit: killed at every start, never serving). One larger
    than the store would ever hold (16 MiB) is refused unread, as a huge stored document."""
    path = tmp_path / "snapshot.json"
    with path.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # (sparse: no disk used)
    path.chmod(0o600)
    problems: list[str] = []
    snap = SnapshotFile(path, RING, lambda kind, problem, which, cause="other": problems.append(problem))
    assert snap.read() is None
    assert len(problems) == 1 and "not read" in problems[0], problems


def test_a_snapshot_path_that_is_no_regular_file_is_refused_without_waiting(
        tmp_path: Path) -> None:
    """A FIFO at `snapshot_path` (a path mistyped into a pipe, something planted in the
    folder) was opened for reading, which waits for a writer: `serve` hung at its start, no
    line logged, and its thread kept the process from exiting. It is refused at once, named,
    as a key file that is no regular file is; the next write replaces it with a file."""
    path = tmp_path / "snapshot.json"
    os.mkfifo(path, 0o600)
    problems: list[str] = []
    snap = SnapshotFile(path, RING, lambda kind, problem, which, cause="other": problems.append(problem))
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(snap.read()), daemon=True)
    reader.start()
    reader.join(2.0)
    if reader.is_alive():  # (a writer lets the reader go: it must not outlive the test)
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(2.0)
        pytest.fail("reading a FIFO at snapshot_path waited for a writer")
    assert got == [None]
    assert len(problems) == 1 and "not a regular file" in problems[0], problems
    snap._write(DOC)
    assert path.is_file() and snap.read() == DOC


def test_a_snapshot_path_that_is_a_link_is_written_through_it(tmp_path: Path) -> None:
    """snapshot_path a link into a persistent volume: each write replaced the link with a
    file of its own beside it (shown as written), and a restart read the file the link
    pointed to, never written since. A write now lands in that file, the link kept."""
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o700)
    image = tmp_path / "image"
    image.mkdir(mode=0o755)
    image.chmod(0o755)
    link = image / "snapshot.json"
    link.symlink_to(volume / "snapshot.json")
    snap = SnapshotFile(link, RING)
    snap._write(DOC)
    assert link.is_symlink() and (volume / "snapshot.json").is_file()
    assert SnapshotFile(volume / "snapshot.json", RING).read() == DOC
    # a link where others may write is not followed: the write fails, is shown
    image.chmod(0o777)
    with pytest.raises(OSError, match="symbolic link in a folder other users may"):
        snap._write(StateDoc(generation=2))
    assert SnapshotFile(volume / "snapshot.json", RING).read() == DOC


async def test_a_sibling_workers_older_document_is_not_written_over_a_newer(
        tmp_path: Path) -> None:
    """The workers of `serve --workers N` share one `state.snapshot_path`, and each kept
    only its own writes in order: a sibling a document behind (its pub/sub turn a moment
    later, its write thread slower) wrote the generation before a kill over the file the
    other had just written with it. Killed then (watchdog, OOM, a host crash), it never
    wrote the kill back: a start without the store enforced the file, without the kill
    (found by review of the kill switch across workers)."""
    path = tmp_path / "snapshot.json"
    ahead, behind = SnapshotFile(path, RING), SnapshotFile(path, RING)
    ahead.soon(StateDoc(generation=6, epoch="e", kills={"version:iris:v2": FLAG}))
    await ahead.flush()
    behind.soon(StateDoc(generation=5, epoch="e"))
    await behind.flush()
    got = SnapshotFile(path, RING).read()
    assert got is not None and got.generation == 6 and set(got.kills) == {"version:iris:v2"}
    assert behind.status() == {"path": str(path), "ok": True, "generation": 6, "error": None,
                               "kills_only": None, "unverified_origin": None,
                               "refused": None}
    # a newer one still replaces it, and a file it cannot verify is replaced as before
    behind.soon(StateDoc(generation=7, epoch="e"))
    await behind.flush()
    got = SnapshotFile(path, RING).read()
    assert got is not None and got.generation == 7
    other = SnapshotFile(path, Keyring(Key.of(b"o" * 32), context="kgtest:"))
    other.soon(StateDoc(generation=2, epoch="e"))
    await other.flush()
    assert other.read() is not None and other.status()["generation"] == 2


async def test_a_lock_held_by_a_hung_sibling_is_reported_and_the_write_lands_after(
        tmp_path: Path) -> None:
    """The workers share `<path>.lock`. A sibling holding it (stopped mid-write: SIGSTOP, a
    debugger, a hung disk) blocked the write thread in flock forever: /v1/status said the
    snapshot was fine at its old generation while a kill never reached the file, and a stop
    waited on that thread (asyncio's executor shutdown). The wait is now bounded, the
    failure shown, and the write retried until the lock is free (found by review of
    revkill6)."""
    path = tmp_path / "snapshot.json"
    snap = SnapshotFile(path, RING)
    snap.lock_wait = 0.2
    snap.soon(StateDoc(generation=1, epoch="e"))
    await snap.flush()
    assert snap.status()["generation"] == 1
    sibling = os.open(path.with_name("snapshot.json.lock"), os.O_RDWR)
    try:
        fcntl.flock(sibling, fcntl.LOCK_EX)
        snap.soon(StateDoc(generation=2, epoch="e", kills={"version:iris:v2": FLAG}))
        await wait_until(lambda: snap.error is not None, 3, what="the lock reported")
        status = snap.status()
        assert status["ok"] is False and status["generation"] == 1, status
        assert "snapshot.json.lock" in status["error"] and "held" in status["error"], status
        await snap.flush(timeout=0.5)  # (a stop is not held by the lock)
    finally:
        os.close(sibling)
    await wait_until(lambda: snap.status()["generation"] == 2, 3, what="the write landed")
    assert snap.error is None
    got = SnapshotFile(path, RING).read()
    assert got is not None and set(got.kills) == {"version:iris:v2"}


async def test_a_lock_file_that_cannot_be_opened_is_named_in_the_error(tmp_path: Path) -> None:
    """A failure at `<path>.lock` (a folder there, a root-owned lock left by a run as root)
    said "cannot write .../snapshot.json: Is a directory" of a snapshot that is no folder:
    the file an SRE must fix is now named."""
    path = tmp_path / "snapshot.json"
    path.with_name("snapshot.json.lock").mkdir()
    snap = SnapshotFile(path, RING)
    snap.soon(StateDoc(generation=1, epoch="e"))
    await snap.flush()
    status = snap.status()
    assert status["ok"] is False and "snapshot.json.lock" in status["error"], status


async def test_where_a_snapshots_state_came_from_is_signed_with_it_and_read_back(
        tmp_path: Path) -> None:
    """A snapshot of state seeded from a file that could not be verified says so (signed
    with it), with the epochs this instance created: a restart must not take it for the
    fleet's (tests/test_snapshot_unverified_origin.py runs the fleet); one written once the
    fleet's document was verified says nothing, and an edited origin is refused whole."""
    path = tmp_path / "snapshot.json"
    snap = SnapshotFile(path, RING)
    snap.origin = lambda: {"why": "seeded from a snapshot it could not verify", "epochs": ["e"]}
    snap.soon(StateDoc(generation=3, epoch="e", kills={"version:iris:v2": FLAG}))
    await snap.flush()
    back = SnapshotFile(path, RING)
    got = back.read()
    assert got is not None and got.generation == 3 and set(got.kills) == {"version:iris:v2"}
    assert back.unverified_origin == "seeded from a snapshot it could not verify"
    assert back.own_epochs == ("e",) and back.kills_only is None
    assert back.status()["unverified_origin"] == back.unverified_origin  # type: ignore[index]
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'"unverified_origin": {', b'"unverified_origin": null, "x": {'))
    edited = SnapshotFile(path, RING)
    assert edited.read() is not None and edited.kills_only is not None  # (its kills only)
    snap.origin = lambda: None  # the fleet's document verified since
    snap.soon(StateDoc(generation=4, epoch="f"))
    await snap.flush()
    back = SnapshotFile(path, RING)
    assert back.read() is not None and back.unverified_origin is None and back.own_epochs == ()
