"""The config watcher on its own (gateway/control/reload.py): an error no check foresaw is
a refused reload, and reloading goes on (by the file watcher and by SIGHUP's path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.configfile import LoadedConfig, load_config
from gateway.control.reload import ConfigWatcher
from gateway.telemetry.metrics import Metrics
from tests.conftest import two_versions, wait_until, write_config
from tests.test_configsettle import leases_work


def _rewrite(tmp: Path, routes: str) -> None:
    """The config file replaced at once (the watcher sees no half-written file)."""
    new = write_config(tmp, routes, name="next.yaml")
    new.replace(tmp / "killgate.yaml")


async def test_an_unforeseen_error_is_a_refused_reload_and_reloading_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path, two_versions(1, 2, 100, 0))
    first = load_config(path)
    current: list[LoadedConfig] = [first]
    broken = [True]

    async def apply(loaded: LoadedConfig) -> None:
        if broken[0]:  # a step of applying that breaks (once: RecursionError in a dump)
            raise RecursionError("maximum recursion depth exceeded")
        current[0] = loaded

    metrics = Metrics()
    watcher = ConfigWatcher(path, lambda: current[0], apply, lambda _l: None, metrics,
                            debounce=0.05, watch=True)
    await watcher.start()
    try:
        _rewrite(tmp_path, two_versions(1, 2, 50, 50))
        await wait_until(lambda: metrics.get("killgate_config_reload_rejected_total") >= 1, 10,
                         0.02, "the refused reload")
        assert "RecursionError" in (watcher.outcome.last_error or "")
        assert watcher.outcome.loaded_digest == first.digest and current[0] is first
        assert any(r.levelno == logging.ERROR and "config_reload_failed" in r.getMessage()
                   for r in caplog.records)

        broken[0] = False  # the file watcher's task is still there to pick the next edit
        _rewrite(tmp_path, two_versions(1, 2, 20, 80))
        await wait_until(lambda: current[0] is not first, 10, 0.02, "the next reload")
        assert watcher.outcome.last_error is None
        assert metrics.get("killgate_config_reloads_total") == 1

        broken[0] = True  # and SIGHUP's path (a task of its own) refuses, not raises
        _rewrite(tmp_path, two_versions(1, 2, 10, 90))
        assert await watcher.reload("sighup") is False
    finally:
        await watcher.stop()


async def test_a_config_replaced_by_a_fifo_is_refused_and_reloading_goes_on(
        tmp_path: Path) -> None:
    """A config file replaced by a FIFO (or a link to one: git commits links) is refused at
    once: its open waited for a writer for ever, in the reload's thread with the reload lock
    held, so no reload (file or SIGHUP) happened again and the loop's shutdown waited too."""
    path = write_config(tmp_path, two_versions(1, 2, 100, 0))
    first = load_config(path)
    current: list[LoadedConfig] = [first]

    async def apply(loaded: LoadedConfig) -> None:
        current[0] = loaded

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    metrics = Metrics()
    watcher = ConfigWatcher(path, lambda: current[0], apply, lambda _l: None, metrics,
                            debounce=0.05, watch=True)
    await watcher.start()
    try:
        link = tmp_path / "link.yaml"
        link.symlink_to(fifo)
        link.replace(path)
        await wait_until(lambda: metrics.get("killgate_config_reload_rejected_total") >= 1, 10,
                         0.02, "the refused reload")
        assert "not a regular file" in (watcher.outcome.last_error or "")
        assert current[0] is first

        _rewrite(tmp_path, two_versions(1, 2, 20, 80))
        await wait_until(lambda: current[0] is not first, 10, 0.02, "the next reload")
        assert watcher.outcome.last_error is None
    finally:
        _unblock(fifo)  # (before the fix: the blocked reading thread ends)
        await watcher.stop()


def _unblock(fifo: Path) -> None:
    """A reader blocked opening `fifo` gets an end of file (nothing if none waits)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


@pytest.mark.parametrize("target", ["/dev/zero", "big"])
def test_check_refuses_a_config_that_never_ends_without_reading_it_whole(
        tmp_path: Path, target: str) -> None:
    """`killgate check` (and a reload: the same read) of a config replaced by a link to
    /dev/zero, or by a sparse 4 GiB file, refuses it after 1 MiB: both were read whole
    before the size was checked (memory exhausted; here a 1 GiB address-space cap)."""
    if target == "big":
        big = tmp_path / "big.yaml"
        with open(big, "wb") as f:
            f.truncate(4 << 30)
        target = str(big)
    link = tmp_path / "killgate.yaml"
    link.symlink_to(target)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = subprocess.run([sys.executable, "-m", "gateway", "check", str(link)],
                          capture_output=True, text=True, timeout=30, preexec_fn=cap)
    assert proc.returncode == 1, proc.stderr[-500:]
    expected = "not a regular file" if target == "/dev/zero" else "larger than 1048576 bytes"
    assert expected in proc.stderr and "Traceback" not in proc.stderr


async def test_a_reload_waits_for_the_writer_and_applies_the_whole_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGHUP (the watcher off: no file events at all) while a writer holds the config open
    in place: neither applied nor refused until the writer closes it, then applied whole."""
    if not leases_work(tmp_path):
        pytest.skip("no read leases here: the writer probe cannot tell (documented)")
    caplog.set_level(logging.INFO, logger="killgate.reload")
    path = write_config(tmp_path, two_versions(1, 2, 100, 0))
    first = load_config(path)
    watcher, current, metrics = await _sighup_watcher(path, first)
    new = write_config(tmp_path, two_versions(1, 2, 0, 100), name="next.yaml").read_bytes()
    try:
        with open(path, "wb") as f:  # noqa: ASYNC230 - the writer, in place
            f.write(new)  # whole, but its writer is not done (a `cp` still copying)
            f.flush()
            task = asyncio.create_task(watcher.reload("sighup"))
            await wait_until(lambda: "config_not_settled" in caplog.text, 10, 0.02,
                             "the reload to find the file being written")
            assert not task.done() and current[0] is first
        assert await asyncio.wait_for(task, 10) is True
        assert current[0].raw == new
        assert metrics.get("killgate_config_reload_rejected_total") == 0
    finally:
        await watcher.stop()


async def test_stopping_ends_a_reload_that_waits_for_a_writer(tmp_path: Path) -> None:
    if not leases_work(tmp_path):
        pytest.skip("no read leases here: the writer probe cannot tell (documented)")
    path = write_config(tmp_path, two_versions(1, 2, 100, 0))
    first = load_config(path)

    async def apply(_loaded: LoadedConfig) -> None:
        raise AssertionError("nothing may be applied")

    watcher = ConfigWatcher(path, lambda: first, apply, lambda _l: None, Metrics(),
                            debounce=0.05, watch=True)
    await watcher.start()
    with open(path, "a") as f:  # noqa: ASYNC230 - a writer that never finishes
        f.write("# ...")
        f.flush()
        task = asyncio.create_task(watcher.reload("sighup"))
        await wait_until(lambda: task in watcher._retrying, 10, 0.02, "the reload waiting")
        await asyncio.wait_for(watcher.stop(), 5)
        assert task.cancelled()


async def test_a_reload_held_up_by_a_writer_is_shown_and_warned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another process (an agent that wrote the file in place and never closed it, a shell's
    `exec 3<>`) keeps the config open for writing: the reload waits for as long as it does.
    The operator must see that: a WARNING, and /v1/status `config.waiting` with the reason
    (it said nothing: no last_error, an INFO line once)."""
    if not leases_work(tmp_path):
        pytest.skip("no read leases here: the writer probe cannot tell (documented)")
    caplog.set_level(logging.INFO, logger="killgate.reload")
    path = write_config(tmp_path, two_versions(1, 2, 100, 0))
    first = load_config(path)
    new = write_config(tmp_path, two_versions(1, 2, 0, 100), name="next.yaml").read_bytes()
    holder = subprocess.Popen(  # noqa: ASYNC220 - a real other process holding the file
        [sys.executable, "-c", "import sys,os,time\n"
         "f = open(sys.argv[1], 'r+b'); f.truncate(0); f.write(open(sys.argv[2], 'rb').read())\n"
         "f.flush(); print('held', flush=True); time.sleep(60)",
         str(path), str(tmp_path / "next.yaml")], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    watcher, current, metrics = await _sighup_watcher(path, first)
    try:
        task = asyncio.create_task(watcher.reload("sighup"))
        await wait_until(lambda: "config_not_settled" in caplog.text, 10, 0.02,
                         "the reload to find the file held open")
        rec = [r for r in caplog.records if r.getMessage() == "config_not_settled"]
        assert rec[0].levelno == logging.WARNING
        assert "open for writing" in (watcher.outcome.waiting or "")
        assert metrics.get("killgate_config_reload_waiting") == 1
        assert current[0] is first and not task.done()
        # more SIGHUPs meanwhile (a tool sending one every few seconds) do not pile up
        # reloads that each probe the file at every debounce: the waiting one reads the
        # newest file
        more = [asyncio.create_task(watcher.reload("sighup")) for _ in range(20)]
        assert await asyncio.wait_for(asyncio.gather(*more), 5) == [False] * 20
        assert len(watcher._retrying) == 1
        holder.kill()
        holder.wait()
        assert await asyncio.wait_for(task, 10) is True
        assert current[0].raw == new and watcher.outcome.waiting is None
        assert metrics.get("killgate_config_reload_waiting") == 0
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        await watcher.stop()


async def _sighup_watcher(path: Path, first: LoadedConfig
                          ) -> tuple[ConfigWatcher, list[LoadedConfig], Metrics]:
    """A started watcher with file events off (reloads by SIGHUP only), 50 ms debounce:
    the watcher, the config it applied last ([0]) and its metrics."""
    current: list[LoadedConfig] = [first]

    async def apply(loaded: LoadedConfig) -> None:
        current[0] = loaded

    metrics = Metrics()
    watcher = ConfigWatcher(path, lambda: current[0], apply, lambda _l: None, metrics,
                            debounce=0.05, watch=False)
    await watcher.start()
    return watcher, current, metrics


async def test_a_stop_ends_a_reload_that_swallowed_its_cancellation(tmp_path: Path) -> None:
    """Found by a CI run (test_reload_drill_diff hung 60 s in the gateway's stop): Python
    3.11's `asyncio.wait_for` (the config record's write, under a reload) can lose a
    cancellation that lands as its inner call finishes; the debouncer then went back to
    waiting for the next change, and the stop's gather waited for it for good. Here the
    apply swallows the cancellation the same way; the stop still ends."""
    path = write_config(tmp_path, two_versions(1, 2, 100, 0))
    first = load_config(path)
    entered = asyncio.Event()

    async def apply(_loaded: LoadedConfig) -> None:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # (as 3.11's wait_for may)
            await asyncio.sleep(30)

    watcher = ConfigWatcher(path, lambda: first, apply, lambda _l: None, Metrics(),
                            debounce=0.05, watch=True)
    await watcher.start()
    _rewrite(tmp_path, two_versions(1, 2, 50, 50))
    await asyncio.wait_for(entered.wait(), 10)
    await asyncio.wait_for(watcher.stop(), 5)
