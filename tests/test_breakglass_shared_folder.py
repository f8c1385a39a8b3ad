"""A break-glass use's file is taken at a start only once the process that wrote it is
gone, also where the snapshot folder is shared with processes this host cannot see (revdrill9).

A start took the file of each pid that is not running here, or that is its own (a
container's pid 1 restarted). But a folder is shared beyond one pid table: two containers
of a host each run killgate as pid 1 on one mounted volume, two hosts mount it over NFS (the
brief's "a group on two machines sharing a state dir"). Their live processes' pids do not
run here, or are this process's own: a start took a file its writer was still committing,
and counted the use from the trail while the writer counted it too (one use, two counts),
or dropped it as not applied before its commit landed (a writer SIGKILLed next: none). Now
each process holds a lock (flock, which a host's containers share and NFS carries) for its
life, each file names it, and a start takes a file whose writer's lock is still held by
nobody. Real `killgate serve` making the event, real redis; the writer that lives elsewhere
is a real process holding its lock, then SIGKILLed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.admin.glassjournal import Journal
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, write_config
from tests.staterig import store_on
from tests.test_admin_approvals import APPROVALS
from tests.test_breakglass_leftover_scan import _uses
from tests.test_revops_fleet import _state

pytestmark = pytest.mark.timeout(60)

HOLD = ("import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n")


async def _holder(lock: Path) -> asyncio.subprocess.Process:
    """A live writer elsewhere: a process holding `lock` until it is killed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(lock), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"held\n"
    return proc


def _leave(folder: Path, name: str, eid: str, **more: Any) -> None:
    (folder / f"{name}.json").write_text(json.dumps(
        {"id": eid, "time": time.time(), "glass": {"action": "unkill", "actor": "alice"},
         **more}))


async def test_a_live_writers_file_of_another_pid_table_is_not_taken(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(redis_server, tmp_path),
                       extra=APPROVALS)
    async with running_gateway(cfg, "inst-glass") as g:
        a, b = await _uses(session, g.admin, 2)  # (each counted by the serve that made it)
    store = store_on(redis_server, "revops")
    await store.open()
    folder = tmp_path / "shared.glass"
    folder.mkdir(mode=0o700)
    lock = folder / ".lock-1-0123456789abcdef"
    holder = await _holder(lock)
    counted: list[dict[str, Any]] = []
    try:
        # another host's process (its pid runs nowhere here), and another container's pid
        # that is this process's own, both alive, each between its commit and its count
        _leave(folder, f"999999-{a}", a, pid=999999, boot="another-hosts-boot",
               lock=lock.name)
        _leave(folder, f"{os.getpid()}-{b}", b, pid=os.getpid(), lock=lock.name)
        await Journal(folder).reconcile(store, lambda glass, _: counted.append(glass))
        assert counted == [], counted  # (their writers count them: counted here, twice)
        assert sorted(f.name for f in folder.glob("*-*.json")) == \
            sorted([f"999999-{a}.json", f"{os.getpid()}-{b}.json"])
        # the writer dies (SIGKILL) before counting them: its lock is free, the next
        # start takes both, counts each once, and clears the dead writer's lock
        holder.kill()
        await holder.wait()
        await Journal(folder).reconcile(store, lambda glass, _: counted.append(glass))
        assert len(counted) == 2 and list(folder.glob("*-*.json")) == [], counted
        assert not lock.exists()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await store.close()


async def test_a_use_a_process_makes_names_its_lock_held_while_it_runs(
        tmp_path: Path) -> None:
    """The writing side: the file a use leaves names a lock this process holds (another
    process cannot take it), and a start of this process does not take its own."""
    folder = tmp_path / "snap.json.glass"
    j = Journal(folder)
    eid, path = j.begin({"action": "unkill", "actor": "alice"})
    assert path is not None
    doc = json.loads(path.read_text())
    assert isinstance(doc.get("lock"), str) and "/" not in doc["lock"]
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n    print('held')\nelse:\n    print('free')\n",
        str(folder / doc["lock"]), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(probe.communicate(), 10)
    assert out == b"held\n"
    assert Journal(folder).leftovers() == []  # (another Journal of this live process)
    assert path.exists() and eid in path.name
