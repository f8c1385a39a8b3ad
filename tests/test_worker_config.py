"""`serve --workers N`: a worker that starts apart from its siblings serves what they run
(gateway/workerconfig.py), and a SIGHUP while a worker starts neither ends it nor is lost.
The two tests with the watcher off take turns on one group (tests/sharedgroup.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession

from gateway.workergroup import RESTART_WINDOW
from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import ROOT, free_port, two_versions, wait_until, write_config
from tests.test_reload import atomic_write
from tests.test_workers import _children

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")

PATH = "/v2/models/iris/x"


def _listening(log: str, pid: int) -> bool:
    return any("listening" in line and f"pid={pid}" in line for line in log.splitlines())


class Group:
    """A `serve --workers 2` process, its workers, and what they answer."""

    def __init__(self, gw, tmp: Path) -> None:  # (a tests.conftest.GatewayProcess)
        self.gw = gw
        self.sup = gw.proc.pid
        self.tmp = tmp
        self.started: dict[int, float] = {}  # a replacement's pid -> when it listened

    async def kill_one(self) -> tuple[int, set[int]]:
        """SIGKILL a worker: its pid and its siblings' (read before the kill: the supervisor
        may start the replacement before a later look). A replacement is killed only once
        it has served longer than the restart window: a restarted worker that dies sooner
        is, by design, a crash loop (gateway/workergroup.py)."""
        victim, *others = _children(self.sup)
        if victim in self.started:
            settled = self.started[victim] + RESTART_WINDOW + 0.5
            await wait_until(lambda: time.monotonic() > settled, 5, 0.05,
                             "the replacement past the restart window")
        os.kill(victim, signal.SIGKILL)
        return victim, set(others)

    async def replacement(self, victim: int, others: set[int]) -> int:
        """The pid of the worker the supervisor starts in place of `victim`."""
        await wait_until(lambda: victim not in _children(self.sup)
                         and len(_children(self.sup)) == 2, 15, 0.002, "a replacement worker")
        (new,) = set(_children(self.sup)) - others
        return new

    async def restart_one(self) -> int:
        new = await self.replacement(*await self.kill_one())
        await wait_until(lambda: _listening(self.gw.output(), new), 15, 0.02,
                         "the replacement worker listening")
        self.started[new] = time.monotonic()
        return new

    async def versions(self, s: ClientSession, n: int = 40) -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(n):  # fresh connections: SO_REUSEPORT reaches both (all one: 2^-39)
            async with s.get(self.gw.url + PATH) as r:
                assert "x-killgate-version" in r.headers, (r.status, await r.text())
                seen[r.headers["x-killgate-version"]] += 1
        return seen

    async def until(self, s: ClientSession, want: str, what: str) -> None:
        async def all_want() -> bool:
            return await self.versions(s) == {want: 40}

        await wait_until(all_want, 15, 0.05, what)

    def alive(self) -> None:
        assert self.gw.proc.poll() is None and len(_children(self.sup)) == 2, self.gw.output()
        assert "crash loop" not in self.gw.output()


async def _group(tmp_path: Path, backends, gateway_procs, watch: bool,
                 artifact: str = "", server: str = "") -> tuple[Group, Path, int, int]:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(p1, p2, 100, 0)
    if artifact:
        routes = routes.replace(f'{p1}", weight: 100}}', f'{p1}", weight: 100, {artifact}}}')
    cfg = write_config(tmp_path, routes,
                       extra=f"server: {{watch_config: {'true' if watch else 'false'}"
                             f"{server}}}\n",
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    run = tmp_path / "run"
    run.mkdir()
    gw = gateway_procs(cfg, workers=2, env={"TMPDIR": str(run)})
    await asyncio.to_thread(gw.wait_ready)
    group = Group(gw, run)
    await wait_until(lambda: len(_children(group.sup)) == 2, 15, 0.05, "two workers")
    return group, cfg, p1, p2


def _to_v2(text: str, p1: int, p2: int) -> str:
    return (text.replace(f'{p1}", weight: 100', f'{p1}", weight: 0')
            .replace(f'{p2}", weight: 0}}', f'{p2}", weight: 100}}'))


@pytest.fixture(scope="module")
def _unwatched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One `serve --workers 2` group, watch_config off, v1 with an artifact, for the tests
    that reload it by SIGHUP (tests/sharedgroup.py); the last of them stops it."""
    from tests.sharedgroup import module_group  # (it imports this module)

    yield from module_group(tmp_path_factory.mktemp("group"), artifact='artifact: "sha256:a1"')


@pytest.fixture
async def unwatched(_unwatched: Any) -> Any:
    """The shared group, serving v1 from its file as the group started (a test before put
    v2 or a refused identity there: the file is written back and reloaded)."""
    g = await asyncio.to_thread(_unwatched.take)
    cfg = g.gw.config
    if cfg.read_text() != _unwatched.first:
        atomic_write(cfg, _unwatched.first)
        g.gw.signal(signal.SIGHUP)
        async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            await g.until(s, "v1", "the group back on its first file")
    return _unwatched


async def test_with_the_watcher_off_a_restarted_worker_serves_what_its_siblings_run(
        unwatched: Any) -> None:
    """An edit nobody reloaded, or one the workers refused, reaches no restarted worker;
    one they reloaded does."""
    g, cfg, p1, p2 = unwatched.g, unwatched.g.gw.config, unwatched.p1, unwatched.p2
    text = cfg.read_text()
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        atomic_write(cfg, _to_v2(text, p1, p2))  # no SIGHUP: nothing may change
        await g.restart_one()
        assert await g.versions(s) == {"v1": 40}
        g.gw.signal(signal.SIGHUP)
        await g.until(s, "v2", "the SIGHUP reload")
        await g.restart_one()
        assert await g.versions(s) == {"v2": 40}  # a restart after SIGHUP: the new config

        # refused by every worker (a version's identity changed: the history check, which
        # a bare parse of the file passes), then by a restarted one: no crash loop
        rejected = g.gw.output().count("config_rejected")
        atomic_write(cfg, _to_v2(text, p1, p2).replace("sha256:a1", "sha256:a2"))
        g.gw.signal(signal.SIGHUP)
        await wait_until(lambda: g.gw.output().count("config_rejected") >= rejected + 2, 10,
                         0.05, "both workers refusing the changed identity")
        await g.restart_one()
        assert await g.versions(s) == {"v2": 40}
        g.alive()
    # (the group's exit code, 0: at the stop of the last test sharing it, or the module's end)


async def test_with_the_watcher_on_a_restarted_worker_starts_on_the_reloaded_file(
        tmp_path: Path, backends, gateway_procs) -> None:
    """The workers' reloads become the group's bytes at once (no window on the old config
    after a restart); the group's bytes gone, a worker starts from the file itself."""
    g, cfg, p1, p2 = await _group(tmp_path, backends, gateway_procs, watch=True)
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        atomic_write(cfg, _to_v2(cfg.read_text(), p1, p2))
        await g.until(s, "v2", "the watchers' reload")
        reloads = g.gw.output().count("config_reloaded")
        await g.restart_one()
        assert await g.versions(s) == {"v2": 40}
        assert g.gw.output().count("config_reloaded") == reloads  # it started on v2

        (shared,) = g.tmp.glob("killgate-workers-*/config")
        assert shared.stat().st_mode & 0o777 == 0o600
        shared.unlink()  # (a temp cleaner)
        await g.restart_one()
        assert "worker_config_unreadable" in g.gw.output()
        assert await g.versions(s) == {"v2": 40}  # from the file itself
        assert not shared.exists()  # what a worker fell back to is not the group's
        atomic_write(cfg, cfg.read_text().replace(f'{p1}", weight: 0', f'{p1}", weight: 100')
                     .replace(f'{p2}", weight: 100}}', f'{p2}", weight: 0}}'))
        await g.until(s, "v1", "the watchers' reload back to v1")
        assert shared.exists()  # a reload shares it again
        await g.restart_one()
        assert await g.versions(s) == {"v1": 40}
        g.alive()
    assert g.gw.stop() == 0, g.gw.output()
    assert not list(g.tmp.iterdir())  # the run directory, the copy with it, removed


def test_config_bytes_is_refused_outside_a_worker(tmp_path: Path) -> None:
    """The hidden option writes where it points: not an option for a user's own serve."""
    cfg = write_config(tmp_path, two_versions(free_port(), free_port()))
    victim = tmp_path / "notes.txt"
    victim.write_text("important notes\n")
    # (forked from a process that imported the CLI: tests/cli_fork.py; `serve` only refuses)
    res = cli_fork.run(["serve", "-c", str(cfg), "--config-bytes", str(victim)],
                       dict(os.environ), str(ROOT), 60)
    assert res.returncode == 2 and "--config-bytes" in res.stderr, res
    assert victim.read_text() == "important notes\n"


def _sighup_blocked(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    raise AssertionError("no SigBlk line")


async def test_sighup_while_a_worker_starts_reloads_it_and_does_not_end_it(
        unwatched: Any) -> None:
    """A worker starts with SIGHUP blocked and takes it once it can reload: by default
    SIGHUP ends a process, and a restarted worker's death within 1 s stopped the group.
    The replacement is stopped (SIGSTOP) while the SIGHUP comes, so it is still starting."""
    g, cfg, p1, p2 = unwatched.g, unwatched.g.gw.config, unwatched.p1, unwatched.p2
    new = await g.replacement(*await g.kill_one())
    # after its exec (Popen's vfork holds the supervisor until then: stopped before it,
    # the supervisor could not forward the SIGHUP)
    await wait_until(lambda: b"--worker-index" in Path(f"/proc/{new}/cmdline").read_bytes(),
                     5, 0.001, "the replacement's exec")
    os.kill(new, signal.SIGSTOP)
    try:
        assert _sighup_blocked(new)  # from its first instruction (the mask crosses exec)
        assert not _listening(g.gw.output(), new)
        atomic_write(cfg, _to_v2(cfg.read_text(), p1, p2))
        g.gw.signal(signal.SIGHUP)
        await wait_until(lambda: _pending_sighup(new), 5, 0.01,
                         "the SIGHUP pending in the stopped worker")
    finally:
        os.kill(new, signal.SIGCONT)
    await wait_until(lambda: _listening(g.gw.output(), new), 15, 0.05, "the replacement listening")
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        await g.until(s, "v2", "both workers on the reloaded file")
    assert not _sighup_blocked(new)
    g.alive()
    assert new in _children(g.sup)
    # (the group the test above shared too: its exit code)
    assert g.gw.stop() == 0, g.gw.output()


def _pending_sighup(pid: int) -> bool:
    bit = 1 << (signal.SIGHUP - 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
            return True
    return False
