"""What a serving process with `state: local` writes to disk while nobody changes anything
(RESULTS §61): its heartbeat (every `heartbeat_interval`) and its published traffic counts
(every 5 s) are replaced whole but never fsynced. Each was two fsyncs (the file, its
folder) on the serving process: a disk flush a second under steady traffic, for files a
power loss makes meaningless (they say a process that no longer runs was alive).

A real `killgate serve` under `strace -f -e trace=fsync` (skipped without strace or
ptrace), a real backend and steady traffic: the heartbeat file is rewritten (a new
inode each beat) and no fsync is made; a kill is still fsynced (the store's promise).
And the store's own calls, in process: a heartbeat and a count are written whole, with
no fsync, while a state change still fsyncs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.backends import echo_app
from tests.conftest import ROOT, free_port, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)

ROUTE = """\
- name: iris
  match: {path_prefix: /v2/models/iris}
  stable: v1
  versions:
    - {name: v1, url: "http://127.0.0.1:PORT", weight: 100}
"""


def _fsyncs_after(trace: Path, t0: float, t1: float = float("inf")) -> list[str]:
    """The fsync/fdatasync calls strace (-ttt) saw between t0 and t1 (epoch s)."""
    out = []
    for line in trace.read_text(errors="replace").splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or "sync(" not in parts[2]:
            continue
        with contextlib.suppress(ValueError):
            if t0 <= float(parts[1]) <= t1:
                out.append(line)
    return out


@pytest.fixture
def traced_serve(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    probe = subprocess.run([strace, "-o", os.devnull, "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode(errors='replace')}")
    procs: list[subprocess.Popen[bytes]] = []

    def start(cfg: Path) -> subprocess.Popen[bytes]:
        log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen(
            [strace, "-f", "-qq", "-ttt", "-e", "trace=fsync,fdatasync",
             "-o", str(tmp_path / "trace.txt"), sys.executable, "-m", "gateway",
             "serve", "-c", str(cfg)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
            start_new_session=True)
        log.close()
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def _leftovers(tmp: Path) -> list[Path]:
    return list(tmp.rglob("*.tmp"))


def _beat(tmp: Path) -> tuple[int, float] | None:
    """The heartbeat file's (inode, seen), or None before the first."""
    for f in (tmp / "store.json.instances").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            return f.stat().st_ino, float(json.loads(f.read_bytes())["seen"])
    return None


async def test_serve_under_traffic_makes_no_fsync_until_a_change(
        tmp_path: Path, traced_serve: Callable[[Path], subprocess.Popen[bytes]],
        backends: Callable[[web.Application], Awaitable[int]]) -> None:
    port = await backends(echo_app("v1"))
    data, admin = free_port(), free_port()
    cfg = write_config(tmp_path, ROUTE.replace("PORT", str(port)),
                       listen=f"127.0.0.1:{data}", admin=f"127.0.0.1:{admin}")
    proc = traced_serve(cfg)
    async with ClientSession() as s:
        async def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")
            with contextlib.suppress(OSError):
                async with s.get(f"http://127.0.0.1:{admin}/readyz") as r:
                    return r.status == 200
            return False

        await wait_until(ready, 30, 0.05)
        first = _beat(tmp_path)
        await wait_until(lambda: (b := _beat(tmp_path)) is not None and b != first, 10, 0.02)
        t0 = time.time()  # (the start's own writes, a snapshot, are behind us)
        seen: set[int] = set()
        stop = asyncio.Event()

        async def traffic() -> int:
            n = 0
            while not stop.is_set():
                async with s.get(f"http://127.0.0.1:{data}/v2/models/iris/infer") as r:
                    assert r.status == 200
                    await r.read()
                n += 1
            return n

        async def beats() -> bool:
            b = _beat(tmp_path)
            if b is not None:
                seen.add(b[0])
            return len(seen) >= 4  # (3 heartbeats written under traffic, ~3 s)

        clients = [asyncio.create_task(traffic()) for _ in range(4)]
        try:
            await wait_until(beats, 15, 0.02)
        finally:
            stop.set()
            served = sum(await asyncio.gather(*clients))
        t1 = time.time()
        assert served > 0
        assert _fsyncs_after(tmp_path / "trace.txt", t0, t1) == []
        # a change still is durable: a kill is fsynced before it is answered
        await kill(s, f"http://127.0.0.1:{admin}", scope="route", route="iris")
        await wait_until(lambda: _fsyncs_after(tmp_path / "trace.txt", t1) != [], 10, 0.02)
    # the gateway itself stopped (strace, sent SIGTERM, detaches and leaves it running)
    for pid in _children(proc.pid):
        os.kill(int(pid), signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0


async def test_store_writes_beats_and_counts_whole_without_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.state.files import atomic_write
    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "store.json")
    calls: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    await store.heartbeat("a", 3, "cfg")
    await store.heartbeat("a", 4, "cfg")
    await store.put_stats("console:traffic", "a", {"instance": "a", "t": 1.0})
    assert calls == []
    assert (await store.live_instances(5.0)) == {"a": 4}
    assert await store.get_stats("console:traffic") == [{"instance": "a", "t": 1.0}]
    assert not _leftovers(tmp_path)  # (each renamed into place)
    atomic_write(tmp_path / "durable.json", b"{}")  # (the store's file, the snapshot...)
    assert len(calls) == 2, "a durable replace no longer fsyncs the file and its folder"
