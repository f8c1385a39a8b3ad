"""`state: local`'s leftovers (impleft9): a crash between a replace's write and its rename
(files.atomic_write: `.<name>.<pid>.<hex>.tmp` beside the file) left the temporary file for
good, and a route removed from the config kept its counts folder (`<path>.stats/<route>/`,
one file per instance that ran it) for good: nothing read or removed either. Now a start
removes, past the horizon of a stale counts file (localaux.GARBLED_STATS_AFTER), the
temporary files whose writer is no live process, and the counts of routes this config does
not name, logged once at info naming them; never a temporary file younger than that, nor
one whose writer runs, nor the counts of a route configured, nor a file not of killgate's.

A real `killgate serve` on a real run directory planted with what crashes and removed
routes leave."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from gateway.state.localsweep import STALE_AFTER, started_at
from tests.backends import echo_app
from tests.conftest import free_port, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(60)

HOUR = 3600.0


def plant(path: Path, age: float, data: bytes = b'{"t": 1}') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _ended() -> int:
    """A pid that ran and ended (a crashed writer's)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _old_process() -> tuple[int, float]:
    """A live process and an age past STALE_AFTER since its start: a file that old can be
    its (pid 1: the oldest)."""
    started = started_at(1)
    if started is None or time.time() - started < STALE_AFTER + 120:
        pytest.skip("no process here ran long enough to have written an old file")
    return 1, min(HOUR, time.time() - started - 60)


async def test_a_start_removes_crash_temporaries_and_removed_routes_counts(
        tmp_path: Path, backends, gateway_procs) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    stats, beats = tmp_path / "store.json.stats", tmp_path / "store.json.instances"
    dead, live, age = _ended(), *_old_process()  # (a live writer's: started before it)
    gone = [  # what a start removes
        plant(tmp_path / f".store.json.{dead}.0123456789ab.tmp", HOUR),
        plant(tmp_path / f".store.json.idempotency.json.{dead}.a1b2c3d4e5f6.tmp", HOUR),
        plant(beats / f".host-9-abcdef.json.{dead}.00112233aabb.tmp", HOUR),
        plant(stats / "iris" / f".host-9-abcdef.json.{dead}.ffeeddccbbaa.tmp", HOUR),
        plant(stats / "removed" / "host-9-abcdef.json", HOUR),
        plant(stats / "removed" / "host-8-abcdef.json", 2 * HOUR),
        plant(stats / "shadow~removed" / "host-9-abcdef.json", HOUR),
        plant(stats / "shadow~removed~records" / "host-9-abcdef.json", HOUR),
    ]
    kept = [  # what it leaves
        plant(tmp_path / f".store.json.{dead}.0123456789ac.tmp", 0),  # (young)
        plant(tmp_path / f".store.json.{live}.0123456789ad.tmp", age),  # (its writer runs)
        plant(stats / "iris" / "host-9-abcdef.json", HOUR),  # (a route configured)
        plant(stats / "shadow~iris" / "host-9-abcdef.json", HOUR),
        plant(stats / "console:traffic" / "host-9-abcdef.json", HOUR),  # (traffic.py's)
        plant(stats / "young" / "host-9-abcdef.json", 0),  # (another config's, live)
        plant(tmp_path / "notes.tmp", HOUR),  # (not killgate's)
        plant(tmp_path / f".notes.{dead}.xyz.tmp", HOUR),
    ]
    proc = gateway_procs(cfg)
    await asyncio.to_thread(proc.wait_ready)
    await wait_until(lambda: not any(f.exists() for f in gone), 15,
                     what="the leftovers removed")
    assert [f for f in kept if not f.exists()] == []
    assert not (stats / "removed").exists()
    assert (stats / "young").is_dir()
    await asyncio.to_thread(proc.stop)
    said = [ln for ln in proc.output().splitlines() if "local_store_leftovers_removed" in ln]
    assert len(said) == 1, said
    assert " info " in said[0], said
    for f in gone:
        assert json.dumps(str(f)) in said[0], (f, said[0])
    assert str(kept[0]) not in said[0]


async def test_a_link_in_the_counts_folder_is_not_followed(
        tmp_path: Path, backends, gateway_procs) -> None:
    """(revleft9) A link planted in `<path>.stats/` named as no configured route, to a
    folder outside the run directory, was walked as a removed route's counts folder: every
    `*.json` there older than 900 s (and every crash-temporary-named file of a dead pid) was
    removed, outside the store's folder. A link is nobody's counts folder: left alone."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    stats, outside = tmp_path / "store.json.stats", tmp_path / "elsewhere"
    dead = _ended()
    theirs = [plant(outside / "settings.json", HOUR),
              plant(outside / f".settings.json.{dead}.0123456789ab.tmp", HOUR)]
    stats.mkdir()
    (stats / "removed").symlink_to(outside, target_is_directory=True)
    (stats / "shadow~removed").symlink_to(outside, target_is_directory=True)
    swept = plant(stats / "gone" / "host-9-abcdef.json", HOUR)  # (the sweep ran: this goes)
    proc = gateway_procs(cfg)
    await asyncio.to_thread(proc.wait_ready)
    await wait_until(lambda: not swept.exists(), 15, what="the leftovers removed")
    assert [f for f in theirs if not f.exists()] == []
    assert (stats / "removed").is_symlink()
    await asyncio.to_thread(proc.stop)


async def test_a_temporary_whose_pid_now_names_a_younger_process_is_removed(
        tmp_path: Path, backends, gateway_procs) -> None:
    """(revleft9) A crashed writer's pid, reused by a process started after the temporary
    file was last written, kept the file for as long as that process ran: in a container
    killgate is pid 1 (a group's workers the same low pids) at every start, so a crash's
    temporaries were never removed there. A process younger than the file is not its
    writer."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    reused = await asyncio.create_subprocess_exec("sleep", "60")  # (the pid, reused)
    try:
        gone = plant(tmp_path / f".store.json.{reused.pid}.0123456789ab.tmp", HOUR)
        swept = plant(tmp_path / "store.json.stats" / "gone" / "host-9-abcdef.json", HOUR)
        proc = gateway_procs(cfg)
        await asyncio.to_thread(proc.wait_ready)
        await wait_until(lambda: not swept.exists(), 15, what="the sweep ran")
        assert not gone.exists()
        await asyncio.to_thread(proc.stop)
    finally:
        reused.kill()
        await reused.wait()
