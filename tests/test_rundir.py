"""The supervisor's run directory (gateway/rundir.py): what a supervisor killed with SIGKILL
left is removed by the next one, and nothing else is: not a live supervisor's, not another
killgate's without a pid file, not through a link. The end-to-end case (a real supervisor
killed, its workers ending with it) is in test_server.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import rundir

pytestmark = pytest.mark.timeout(30)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(10)
    return p.pid


def _owner(pid: int, namespace: str | None = None) -> bytes:
    return b"%d %s\n" % (pid, (namespace or rundir._namespace()).encode())


def _run_dir(root: Path, name: str, owner: bytes | None) -> Path:
    d = root / (rundir.PREFIX + name)
    d.mkdir(mode=0o700)
    (d / "config").write_bytes(b"admin: {auth: {hmac_secret: s3cret}}\n")
    if owner is not None:
        (d / rundir.OWNER).write_bytes(owner)
    return d


def test_only_the_run_dirs_of_dead_supervisors_are_removed(tmp_path: Path) -> None:
    dead = _run_dir(tmp_path, "dead", _owner(_dead_pid()))
    live = _run_dir(tmp_path, "live", _owner(os.getpid()))
    older = _run_dir(tmp_path, "older", None)  # an older killgate's: no pid file
    ns, _, _ = rundir._namespace().partition("/")
    elsewhere = _owner(_dead_pid(), "4026531999/" + "0" * 36)  # another container's pids
    other_host = _owner(_dead_pid(), ns + "/" + "1" * 36)  # same namespace inode, other boot
    for name, text in (("empty", b""), ("junk", b"not a pid"), ("zero", _owner(0)),
                       ("neg", _owner(-1)), ("bare", b"%d\n" % _dead_pid()),
                       ("elsewhere", elsewhere), ("other-host", other_host)):
        _run_dir(tmp_path, name, text)
    other = tmp_path / "unrelated"
    other.mkdir()
    (other / rundir.OWNER).write_bytes(_owner(_dead_pid()))

    assert rundir.sweep(str(tmp_path)) == [str(dead)]
    assert not dead.exists()
    assert live.exists() and older.exists() and other.exists()
    assert len(list(tmp_path.glob(rundir.PREFIX + "*"))) == 9


def test_a_link_named_like_a_run_dir_is_not_followed(tmp_path: Path) -> None:
    """Another local user cannot point the sweep at a directory to delete: a link named
    `killgate-workers-*` (to a directory whose pid file names a dead process) stays, and
    so does what it points to."""
    target = tmp_path / "precious"
    target.mkdir()
    (target / rundir.OWNER).write_bytes(_owner(_dead_pid()))
    (target / "data").write_bytes(b"keep")
    (tmp_path / (rundir.PREFIX + "link")).symlink_to(target)
    linked_file = _run_dir(tmp_path, "linked-file", None)
    (linked_file / rundir.OWNER).symlink_to(target / rundir.OWNER)

    assert rundir.sweep(str(tmp_path)) == []
    assert (target / "data").read_bytes() == b"keep"
    assert linked_file.exists()


def test_a_new_run_dir_is_private_and_names_its_supervisor(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # (read TMPDIR again)
    d = Path(rundir.make())
    assert d.parent == tmp_path and d.name.startswith(rundir.PREFIX)
    assert (d.stat().st_mode & 0o777) == 0o700
    assert (d / rundir.OWNER).read_bytes() == _owner(os.getpid()).rstrip() + b" locked\n"
    assert rundir.sweep(str(tmp_path)) == []  # its supervisor (this process) is alive


def test_a_run_dir_left_in_another_pid_namespace_of_this_boot_is_removed(
        tmp_path: Path) -> None:
    """A container restarted in its pod keeps /tmp (an emptyDir) but gets a new pid
    namespace: its previous supervisor's directory (config bytes, metric slots) named a pid
    namespace this one cannot see and stayed, one more at every restart, until the tmpfs
    filled. The supervisor's lock on its `supervisor` file says whether it still runs,
    wherever it runs."""
    ns, _, boot = rundir._namespace().partition("/")
    other_ns = f"{int(ns) + 7 if ns.isdigit() else 4026531999}/{boot}"
    left = _run_dir(tmp_path, "left", b"1 %s locked\n" % other_ns.encode())
    holding = _run_dir(tmp_path, "held", b"1 %s locked\n" % other_ns.encode())
    holder = subprocess.Popen(  # another container's supervisor, alive: holds its lock
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(holding / rundir.OWNER)!r}, os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        other_boot = _run_dir(tmp_path, "other-boot", b"1 %s/%s locked\n"
                              % (ns.encode(), b"2" * 36))  # another host's, over NFS
        assert rundir.sweep(str(tmp_path)) == [str(left)]
        assert holding.exists() and other_boot.exists()
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert rundir.sweep(str(tmp_path)) == [str(holding)]  # its supervisor has ended


def test_a_live_supervisors_run_dir_stays_in_any_namespace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    d = Path(rundir.make())
    ns, _, boot = rundir._namespace().partition("/")
    monkeypatch.setattr(rundir, "_namespace", lambda: f"{ns}0/{boot}")  # seen from elsewhere
    assert rundir.sweep(str(tmp_path)) == []
    assert d.exists()
