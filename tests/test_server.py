"""`killgate serve` as a real process: signals, draining, workers, the C-parser guard."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli_fork
from tests.backends import sse_app
from tests.conftest import (
    ROOT,
    die_with_parent,
    free_port,
    two_versions,
    wait_until_sync,
    write_config,
)
from tests.sharedgroup import Shared, module_group


def _cfg(tmp: Path, port: int, extra: str = "") -> Path:
    return write_config(tmp, two_versions(port, port, 100, 0),
                        listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                        extra=extra)


async def test_sigterm_lets_a_stream_finish_then_exits_zero(tmp_path: Path, backends,
                                                            gateway_procs) -> None:
    port = await backends(sse_app("v1", events=8, interval=0.25))  # a 2 s stream
    gw = gateway_procs(_cfg(tmp_path, port, "server: {drain_timeout: 10s}\n"))
    await _to_thread(gw.wait_ready)
    body: dict[str, bytes] = {}

    def read_stream() -> None:
        with urllib.request.urlopen(gw.url + "/v2/models/iris/stream", timeout=10) as r:
            body["data"] = r.read()

    t = threading.Thread(target=read_stream)
    t.start()
    await _to_thread(wait_until_sync, lambda: _inflight(gw.admin) >= 1, 5.0)
    gw.signal(signal.SIGTERM)
    rc = await _to_thread(gw.proc.wait, 15)
    t.join(10)
    assert rc == 0, gw.output()
    assert body["data"].count(b"data: {") == 8 and body["data"].endswith(b"data: [DONE]\n\n")
    assert b"killgate.error" not in body["data"]


@pytest.fixture(scope="module")
def _group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One `serve --workers 2` group for the tests below that leave it serving, the last
    of them stopping it (tests/sharedgroup.py: a group costs three interpreter starts)."""
    yield from module_group(tmp_path_factory.mktemp("group"), watch=True)


@pytest.fixture
def group(_group: Shared) -> Shared:
    _group.take()
    return _group


async def test_two_workers_share_the_port(group: Shared) -> None:
    gw = group.g.gw
    pids: Counter[str] = Counter()

    def hit() -> None:
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            with urllib.request.urlopen(gw.admin + "/healthz", timeout=2) as r:
                pids[json.loads(r.read())["instance"]] += 1
            with urllib.request.urlopen(gw.url + "/v2/models/iris/x", timeout=2) as r:
                assert r.status == 200

    await _to_thread(hit)
    assert len(pids) == 2, pids  # new connections land on both workers
    # (its exit code, 0: at the next test's stop or the module's end)


def _switches(pid: int) -> int:
    """Times `pid` has been switched out (voluntarily or not): each wake-up counts one."""
    status = Path(f"/proc/{pid}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)


def _pipes(pid: int) -> int:
    """How many pipe ends `pid` holds (the supervisor: its wake-up pipe's two, and the read
    end of each worker's pipe)."""
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            n += os.readlink(fd).startswith("pipe:")
    return n


def _children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_the_supervisor_sleeps_while_workers_serve_and_wakes_when_one_dies(
        group: Shared) -> None:
    gw = group.g.gw
    sup = gw.proc.pid
    await _to_thread(wait_until_sync, lambda: len(_children(sup)) == 2, 10.0)
    # each worker tells the supervisor that it serves (a wake-up each, at start), then
    # beats on the same pipe every 0.5 s, which the supervisor reads only every
    # worker_timeout / 2 (15 s here) or when something else wakes it: once both serve,
    # and the supervisor has been still for 0.3 s, it stays still
    await _to_thread(wait_until_sync, lambda: sum(
        "listening" in line for line in gw.output().splitlines()) == 2, 15.0)
    assert _pipes(sup) == 4  # its wake-up pipe's two ends, a read end per worker
    last = [_switches(sup), time.monotonic()]

    def still() -> bool:
        now = _switches(sup)
        if now != last[0]:
            last[:] = [now, time.monotonic()]
        return time.monotonic() - last[1] > 0.3

    await _to_thread(wait_until_sync, still, 10.0, 0.05)
    before = _switches(sup)

    def serve_a_while() -> int:  # requests for at least 1 s (a 50 ms poll woke 20 times)
        n, start = 0, time.monotonic()
        while time.monotonic() - start < 1.0 or n < 20:
            with urllib.request.urlopen(gw.url + "/v2/models/iris/x", timeout=2) as r:
                assert r.status == 200
            n += 1
        return n

    await _to_thread(serve_a_while)
    assert _switches(sup) - before <= 2  # no periodic wake-up while the workers serve

    victim = min(_children(sup))
    os.kill(victim, signal.SIGKILL)  # the supervisor wakes and replaces it
    await _to_thread(wait_until_sync, lambda: victim not in _children(sup)
                     and len(_children(sup)) == 2, 10.0)
    await _to_thread(gw.wait_ready)
    assert gw.stop() == 0, gw.output()


def _serving(pid: int) -> bool:
    """`pid` runs (a zombie no reaper collected serves nothing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_a_supervisor_killed_with_sigkill_leaves_no_worker_and_no_run_dir(
        tmp_path: Path, backends, gateway_procs) -> None:
    """SIGKILL gives the supervisor no time to stop its workers or remove its run directory
    (the config bytes the group runs, 0700): the workers get SIGTERM from the kernel and
    drain (an orphan would serve on the shared ports beside the next supervisor's workers,
    with a config no reload reaches), and the next supervisor removes the directory."""
    from tests.backends import echo_app

    port = await backends(echo_app("v1"))
    run = tmp_path / "run"
    run.mkdir()
    env = {"TMPDIR": str(run)}
    gw = gateway_procs(_cfg(tmp_path, port), workers=2, env=env)
    await _to_thread(gw.wait_ready)
    sup = gw.proc.pid
    await _to_thread(wait_until_sync, lambda: len(_children(sup)) == 2, 10.0)
    workers = _children(sup)
    (left,) = run.glob("killgate-workers-*")
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(5)
    try:
        await _to_thread(wait_until_sync, lambda: not any(_serving(w) for w in workers), 15.0)
    finally:  # (the fixture stops the supervisor's group only while the supervisor runs)
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.data_port), timeout=2).close()
    assert left.exists()

    (tmp_path / "again").mkdir()
    again = gateway_procs(_cfg(tmp_path / "again", port), workers=2, env=env)
    await _to_thread(again.wait_ready)
    assert not left.exists(), "the dead supervisor's run directory is still there"
    assert len(list(run.glob("killgate-workers-*"))) == 1  # the new supervisor's own
    assert "run_dirs_removed" in again.output()
    assert again.stop() == 0, again.output()
    assert list(run.glob("killgate-workers-*")) == []


def test_refuses_to_start_without_the_c_parser(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, free_port())
    env = {"AIOHTTP_NO_EXTENSIONS": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "gateway", "serve", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 3
    assert "C HTTP parser" in res.stderr


def test_serve_with_a_bad_config_exits_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: []\n")
    # (forked from a process that imported the CLI: tests/cli_fork.py; `serve` only refuses)
    res = cli_fork.run(["serve", "-c", str(bad)], dict(os.environ), str(ROOT), 30)
    assert res.returncode == 1
    assert "routes: must have at least 1 item(s)" in res.stderr


@pytest.mark.parametrize(("which", "workers"),
                         [("listen", 1), ("admin", 1), ("listen", 2), ("admin", 2)])
def test_a_port_in_use_is_one_line_naming_it_not_a_traceback(tmp_path: Path, which: str,
                                                             workers: int) -> None:
    """Another process listens on the data (or admin) port: `killgate serve` says which
    address and why on one line and exits 1, with one worker or a supervisor of two, and
    what to change: the setting that gave the address, in the file (a first `serve` beside
    a `killgate demo` still running was told only `Address already in use`)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = f"127.0.0.1:{free_port()}"
        mine = f"127.0.0.1:{port}"
        cfg = write_config(tmp_path, two_versions(free_port(), free_port()),
                           listen=mine if which == "listen" else other,
                           admin=mine if which == "admin" else other)
        # (forked from a process that imported the CLI: tests/cli_fork.py; it only refuses)
        res = cli_fork.run(["serve", "-c", str(cfg), "--workers", str(workers)],
                           dict(os.environ), str(ROOT), 30)
    assert res.returncode == 1, res.stdout + res.stderr
    setting = "listen" if which == "listen" else "admin.listen"
    assert res.stderr.strip().splitlines()[-1] == (
        f"killgate: cannot listen on {mine}: Address already in use: another process holds "
        f"it (a `killgate demo` or another `killgate serve`?); stop it, or set `{setting}` "
        f"in {cfg} to another address"), res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def _inflight(admin: str) -> float:
    with urllib.request.urlopen(admin + "/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("killgate_inflight_requests "):
                return float(line.split()[1])
    return 0.0


async def _to_thread(fn, *args):  # type: ignore[no-untyped-def]
    import asyncio

    return await asyncio.to_thread(fn, *args)


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' line")


@pytest.mark.parametrize("hard", [20000, 512])
def test_fd_limit_is_raised_to_the_hard_limit(tmp_path: Path, hard: int) -> None:
    """A soft limit of 256 would refuse connections long before max_connections: the
    worker raises it to the hard limit, and warns when even that is too low."""
    import resource

    cfg = write_config(tmp_path, two_versions(9, 9, 100, 0), listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    log = tmp_path / "gw.log"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        die_with_parent()  # (a run ended by its timeout leaves no gateway behind)

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(cfg)], stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limited)
    try:
        wait_until_sync(lambda: b"listening" in log.read_bytes(), 15, what="listening")
        assert _soft_nofile(proc.pid) == hard
        assert (b"fd_limit_low" in log.read_bytes()) == (hard < 20000)  # max_connections
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_the_supervisors_wait_reaps_a_child_that_is_not_a_worker_and_leaves_workers() -> None:
    """A zombie the supervisor does not own is reaped (or every wait after it would end at
    once: a busy loop); a worker's exit is left for Popen.poll, which reports its code."""
    from gateway.childwait import ChildWait

    wait = ChildWait().open()
    try:
        stray = subprocess.Popen([sys.executable, "-c", "pass"])
        wait.sleep(set())  # returns once the stray exits (its SIGCHLD), and reaps it
        wait_until_sync(lambda: _reaped(stray.pid), 5.0, what="the stray reaped")
        stray.wait(timeout=5)  # (Popen learns the child is gone: ECHILD reads as code 0)
        worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        wait.sleep({worker.pid})
        assert worker.poll() == 3  # still there for Popen to reap, with its code
    finally:
        wait.close()


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_a_signal_before_the_supervisors_sleep_still_ends_it() -> None:
    """A signal whose handler ran, or will run, just before the sleep ends it at once (the
    wake-up pipe keeps its byte): with waitid alone, a SIGTERM landing between the loop's
    check and the call was forwarded to no worker until some child exited by itself."""
    from gateway.childwait import ChildWait

    seen: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda sig, _f: seen.append(sig))
    wait = ChildWait().open()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(os.getpid(), signal.SIGUSR1)  # its handler runs now, before the sleep
        started = time.monotonic()
        wait.sleep({worker.pid})  # a worker that will not exit for 60 s
        assert time.monotonic() - started < 5.0
        assert seen == [signal.SIGUSR1]
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait(5)
        wait.close()
        signal.signal(signal.SIGUSR1, old)
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL  # put back


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
async def test_a_supervisor_started_with_sigchld_ignored_still_replaces_a_dead_worker(
        tmp_path: Path, backends, gateway_procs) -> None:
    """An ignored SIGCHLD is inherited across exec (some init scripts and daemons start
    their children so): the kernel then reaps each child itself, and a wait returns only
    when the last child is gone; a worker that dies must still be replaced at once."""
    from tests.backends import echo_app

    port = await backends(echo_app("v1"))
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # (only the supervisor inherits it)
    try:
        gw = gateway_procs(_cfg(tmp_path, port), workers=2)
    finally:
        signal.signal(signal.SIGCHLD, old)
    await _to_thread(gw.wait_ready)
    sup = gw.proc.pid
    await _to_thread(wait_until_sync, lambda: len(_children(sup)) == 2, 10.0)
    victim = min(_children(sup))
    os.kill(victim, signal.SIGKILL)
    await _to_thread(wait_until_sync, lambda: victim not in _children(sup)
                     and len(_children(sup)) == 2, 10.0)
    await _to_thread(gw.wait_ready)
    assert gw.stop() == 0, gw.output()


def test_instance_ids_differ_where_host_and_pid_do_not() -> None:
    """Containers on the host's network share its host name and each runs killgate as pid
    1: host-pid named two instances alike, and receipts merged their acks."""
    import socket

    from gateway.serving import instance_id

    a, b = instance_id(None), instance_id(None)
    host = socket.gethostname().split(".")[0]
    assert a != b and a.startswith(f"{host}-{os.getpid()}-") and b.startswith(f"{host}-")
    assert instance_id(1).endswith("-w1") and instance_id(1) != instance_id(1)


def test_the_supervisor_does_not_import_what_only_workers_run() -> None:
    """The supervisor of `serve --workers N` imported the data plane, the admin API and
    telemetry (gateway.server imported gateway.serving at its top): ~0.5 s of CPU before
    its first worker was started, and their memory held for the group's life. What `serve`
    imports before run_supervisor runs (the CLI, gateway.server, aiohttp's parser for the
    C-parser check) leaves them out."""
    code = ("import sys; import gateway.cli.main, gateway.server; from aiohttp import "
            "http_parser; print(sorted(m for m in sys.modules if m.split('.')[:2] in ("
            "['gateway', 'serving'], ['gateway', 'app'], ['gateway', 'dataplane'], "
            "['gateway', 'admin'], ['gateway', 'telemetry'])))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=str(ROOT))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout
