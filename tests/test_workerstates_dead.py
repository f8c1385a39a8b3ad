"""A worker of a group that died is told of as gone at once, not as running at the
generation it last wrote (gateway/workerstates.py, impglass2 item 3).

A sibling's file named the worker's pid only, checked by `kill(pid, 0)`: a dead worker not
yet reaped by the supervisor (a zombie), or one whose pid a process took since, read as
running at its last generation until its replacement started, and a drill counted a dead
worker that had applied as "applied". The file now names its writer's boot and start
(gateway/procstart.py, as the break-glass files do): a zombie, or a pid of another start,
is gone. Real worker processes writing their files; the test process is their parent, so
the one that exits stays a zombie until it is reaped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.workerstates import GONE, WorkerStates

pytestmark = pytest.mark.timeout(30)

WORKER = """
import sys
from pathlib import Path
from gateway.workerstates import WorkerStates
WorkerStates(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], lambda: 7).start()
print("written", flush=True)
if sys.argv[4] == "stay":
    sys.stdin.read()
"""


def _worker(run: Path, slot: int, stay: bool) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(run), str(slot), f"w{slot}",
                          "stay" if stay else "go"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "written\n"
    return p


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _siblings(run: Path) -> dict[str, int]:
    return dict(WorkerStates(run, 0, "w0", lambda: 7).siblings())


def test_a_dead_worker_not_yet_reaped_or_whose_pid_was_taken_is_gone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    stays = _worker(run, 2, stay=True)
    died = _worker(run, 1, stay=False)
    try:
        deadline = time.monotonic() + 10
        while _state(died.pid) != "Z":  # (exited; its parent, this test, has not reaped it)
            assert time.monotonic() < deadline, _state(died.pid)
            time.sleep(0.01)
        # the running worker reads at its generation; the zombie is gone, not "at 7"
        assert _siblings(run) == {"w2": 7, "w1": GONE}
        died.wait(5)
        # its pid taken by another process (here: the running worker's, another start)
        doc = json.loads((run / "state-1.json").read_text())
        assert isinstance(doc.get("start"), int), doc
        doc["pid"] = stays.pid
        (run / "state-1.json").write_text(json.dumps(doc))
        assert _siblings(run) == {"w2": 7, "w1": GONE}
        # the same pid written by a host's earlier boot: gone too
        doc = json.loads((run / "state-2.json").read_text())
        doc["boot"] = "an-earlier-boot"
        (run / "state-2.json").write_text(json.dumps(doc))
        assert _siblings(run) == {"w2": GONE, "w1": GONE}
    finally:
        for p in (stays, died):
            if p.poll() is None:
                p.kill()
            p.wait(5)
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()


def test_a_break_glass_file_of_a_dead_process_not_yet_reaped_is_taken(tmp_path: Path) -> None:
    """The break-glass files (admin/glassjournal.py) take the same check: a file of a
    process dead but not reaped was skipped as a running sibling's until a later start."""
    from gateway.admin.glassjournal import Journal

    folder = tmp_path / "snap.json.glass"
    folder.mkdir(mode=0o700)
    with subprocess.Popen([sys.executable, "-c", "pass"]) as died:
        deadline = time.monotonic() + 10
        while _state(died.pid) != "Z":
            assert time.monotonic() < deadline, _state(died.pid)
            time.sleep(0.01)
        stat = Path(f"/proc/{died.pid}/stat").read_text().rsplit(")", 1)[1].split()
        (folder / f"{died.pid}-{'a' * 32}.json").write_text(json.dumps(
            {"id": "a" * 32, "time": time.time(), "glass": {"action": "unkill"},
             "pid": died.pid, "start": int(stat[19]),
             "boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip()}))
        taken = Journal(folder).leftovers()
    assert [e["id"] for _, e in taken] == ["a" * 32]
