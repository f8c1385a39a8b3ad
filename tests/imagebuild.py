"""The container image tests/test_container.py runs, built in the background from the start
of the test run rather than when that module comes (the debootstrap of its base, the PyPI
downloads of its dependency layer: minutes on a clean machine, much of it waiting on the
network and the disk, which the other tests' run now overlaps).

`start` (the run's first process, at session start: xdist's controller, or the only
process with -n 0) starts `python -m tests.imagebuild FOLDER RUN_PID` when the run's paths
take in the whole of test_container.py and podman is installed, and names FOLDER to every
test process in $KILLGATE_TEST_IMAGE_BUILD; the module's `image` fixture waits for it
there (`built`). Without that variable (its tests named one by one, a -k or -m, a
--collect-only run) the fixture builds the image itself, as before. Measured on a clean
cache here: the base's debootstrap and import took 158 s of wall time for 44 s of CPU.
At the run's end (`finish`) a build no module took (an interrupted run) is left to end,
never interrupted (a `podman build` stopped midway leaves its working containers behind),
and its own process then removes the image.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/killgate-base:bookworm"
CACHE_TAG = "localhost/killgate:test-cache"
ENV = "KILLGATE_TEST_IMAGE_BUILD"
MODULE = ROOT / "tests" / "test_container.py"

__all__ = ["BASE", "CACHE_TAG", "Built", "build", "built", "finish", "podman", "start"]


def podman() -> list[str] | None:
    """podman's command line as the tests run it (runc, cgroupfs), or None if not installed."""
    exe = shutil.which("podman")
    if exe is None:
        return None
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    return [exe, *runtime, "--cgroup-manager", "cgroupfs"]


def _run(args: list[str], timeout: float) -> None:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args[:6])} ... exited {res.returncode}:\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def build(image: str) -> None:
    """The base image (deploy/container/make-base-image.sh), then the image as `image`, and
    its build stage under a fixed tag (all cached then: a second): its dependency layer is
    the expensive one, and the next run's build reuses it. AssertionError with the output
    of what failed."""
    cmd = podman()
    assert cmd is not None, "podman is not installed"
    made = subprocess.run([str(ROOT / "deploy/container/make-base-image.sh"), BASE],
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, f"the base image could not be made:\n{made.stdout}{made.stderr}"
    args = [*cmd, "build", "--network", "host", "-v", "/etc/ssl/certs:/etc/ssl/certs:ro",
            "--build-arg", f"BASE_IMAGE={BASE}", "--format", "docker"]
    _run([*args, "-t", image, str(ROOT)], 600)
    _run([*args, "--target", "build", "-t", CACHE_TAG + "-build", str(ROOT)], 600)


@dataclass(frozen=True)
class Built:
    image: str  # its tag, this run's own
    started: int  # when its build began (epoch s): what was made before is an older run's


def built(timeout: float = 850) -> Built:
    """The image of this run: the background build's once it ends (its failure raised with
    its output), or one built here and now when no build was started for the run."""
    folder = os.environ.get(ENV)
    if not folder:
        image, started = f"localhost/killgate:test-{os.getpid()}", int(time.time())
        build(image)
        return Built(image, started)
    where = Path(folder)
    rc, deadline = where / "rc", time.monotonic() + timeout
    while not rc.exists():  # (written last, by a rename: whole when seen)
        if time.monotonic() > deadline:
            raise AssertionError(f"the background image build took over {timeout:.0f} s:\n"
                                 + (where / "log").read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    assert rc.read_text() == "0", (where / "log").read_text(errors="replace")[-6000:]
    (where / "taken").touch()
    return Built((where / "image").read_text(), int((where / "started").read_text()))


def _wanted(config: pytest.Config) -> bool:
    """The run's paths take in the whole module (no -k or -m that could leave it out, no
    test named alone), and the run runs tests."""
    opt = config.option
    if opt.keyword or opt.markexpr or opt.collectonly or hasattr(config, "workerinput"):
        return False
    for arg in config.args:
        if "::" in arg:  # (some of its tests, or another module's)
            continue
        path = Path(arg).resolve()
        if path == MODULE or (path.is_dir() and MODULE.is_relative_to(path)):
            return True
    return False


_started: subprocess.Popen[bytes] | None = None


def start(config: pytest.Config) -> None:
    """Start the build for this run when it will run test_container.py (the first process
    only: a worker inherits the variable). Its own session: a Ctrl-C of the run does not
    interrupt it (an interrupted `podman build` leaves its working containers behind)."""
    global _started
    if ENV in os.environ or podman() is None or not _wanted(config):
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="kg-image-build-"))
    # (a tag of this run's own: runs from several checkouts at once must not run each
    # other's build; its layers stay cached for the next run, the tag goes after the module)
    (folder / "image").write_text(f"localhost/killgate:test-{os.getpid()}")
    (folder / "started").write_text(str(int(time.time())))
    with open(folder / "log", "wb") as log:
        _started = subprocess.Popen(
            [sys.executable, "-m", "tests.imagebuild", str(folder), str(os.getpid())],
            cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    os.environ[ENV] = str(folder)


def finish() -> None:
    """At the run's end. A build the module took is done: its folder goes. One it did not
    take (an interrupted run, a -k that left it out) is left to end, never interrupted:
    its process then removes the image and the folder (`_main`)."""
    folder = os.environ.pop(ENV, None)
    if _started is None or folder is None:
        return
    (Path(folder) / "finished").touch()
    if _started.poll() is not None or (Path(folder) / "taken").exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            _started.wait(5)  # (it ends within a second of the module's taking)
        shutil.rmtree(folder, ignore_errors=True)


def _main(folder: Path, run: int) -> int:
    """The background build of the image named in FOLDER/image; FOLDER/rc says how it ended.
    Then, until the module takes the image (FOLDER/taken), or the run (process `run`) ends
    without it: the image removed, and the folder."""
    try:
        build((folder / "image").read_text())
        code = "0"
    except (AssertionError, OSError, subprocess.SubprocessError) as exc:
        print(exc, flush=True)
        code = "1"
    (folder / "rc.tmp").write_text(code)
    (folder / "rc.tmp").replace(folder / "rc")
    while not (folder / "taken").exists():
        if (folder / "finished").exists() or not Path(f"/proc/{run}").exists():
            cmd = podman()
            if cmd is not None:
                subprocess.run([*cmd, "rmi", (folder / "image").read_text()],
                               capture_output=True, timeout=60)
            shutil.rmtree(folder, ignore_errors=True)
            break
        time.sleep(1)
    return int(code)


if __name__ == "__main__":
    sys.exit(_main(Path(sys.argv[1]), int(sys.argv[2])))
