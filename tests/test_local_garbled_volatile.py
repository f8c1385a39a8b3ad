"""`state: local`'s volatile files after a power loss (RESULTS §61: heartbeats and the
console's traffic counts are written without fsync): such a file can come back empty, cut
short or full of NULs. Every instance's name holds its pid, so a file of a process that ran
before the power loss is never written again: an unreadable one was skipped by every read,
silently, and never removed (a stale one is, past ten leases). Now it is treated as absent,
logged once at warning naming the file, and removed once its mtime is past the same
horizon as a stale file's.

A real `killgate serve` killed with SIGKILL (its files left as a power loss leaves them),
those files garbled, old garbled files beside them; a second real serve then answers
`GET /v1/status`, the console's `/v1/fleet` and `/v1/traffic`, and `killgate status`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import bearer, free_port, two_versions, wait_until, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(90)

STATE = """\
state:
  backend: local
  path: {tmp}/store.json
  snapshot_path: {tmp}/snapshot.json
  poll_interval: 50ms
  heartbeat_interval: 200ms
"""

#: what a power loss leaves of a file written but never flushed
GARBLES = {"empty": b"", "nuls": b"\0" * 120, "cut": b'{"generation": 3, "seen": 17',
           "not-an-object": b"[1, 2",
           # not a power loss's: a file planted in the run directory (json's RecursionError
           # is no ValueError: it was a 500 for every status read)
           "deep": b"[" * 100_000}


def _aged(path: Path, data: bytes, seconds: float) -> None:
    path.write_bytes(data)
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_garbled_heartbeats_and_counts_are_absent_warned_once_and_removed_when_old(
        tmp_path: Path, backends, gateway_procs, session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=STATE.format(tmp=tmp_path),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    beats = tmp_path / "store.json.instances"
    counts = tmp_path / "store.json.stats" / "console:traffic"
    first = gateway_procs(cfg)
    await asyncio.to_thread(first.wait_ready)
    await wait_until(lambda: list(beats.glob("*.json")) and list(counts.glob("*.json")), 20,
                     what="the first serve's heartbeat and traffic counts")
    os.killpg(first.proc.pid, signal.SIGKILL)  # (the power loss: nothing removed)
    first.proc.wait(10)
    [beat] = beats.glob("*.json")
    [count] = counts.glob("*.json")
    beat.write_bytes(b"")  # the dead serve's files, as the power loss left them: fresh
    count.write_bytes(b"\0" * 64)
    for name, data in GARBLES.items():  # and older ones, of serves before it
        _aged(beats / f"old-{name}.json", data, 3600)
        _aged(counts / f"old-{name}.json", data, 3600)

    second = gateway_procs(cfg)
    await asyncio.to_thread(second.wait_ready)
    for _ in range(3):  # (reads again and again: one warning per file, not one per read)
        async with session.get(f"{second.admin}/v1/status", headers=bearer("killgate:read")) as r:
            assert r.status == 200, await r.text()
            status = await r.json()
        async with session.get(f"{second.admin}/v1/fleet", headers=bearer("killgate:read")) as r:
            assert r.status == 200, await r.text()
            fleet = await r.json()
        async with session.get(f"{second.admin}/v1/traffic",
                               headers=bearer("killgate:read")) as r:
            assert r.status == 200, await r.text()
            traffic = await r.json()
        await asyncio.sleep(0)
    # absent: only the second serve is seen, anywhere
    assert [row["instance"] for row in fleet["instances"]] == [fleet["instance"]], fleet
    assert beat.stem not in json.dumps(status) and "old-" not in json.dumps(status), status
    assert traffic["scope"] == "fleet" and traffic["dropped_blobs"] == 0, traffic
    assert traffic["instances"] == [fleet["instance"]], traffic

    # the old garbled files are gone (past the horizon); the fresh ones stay for now
    await wait_until(lambda: not list(beats.glob("old-*.json")), 10,
                     what="the old garbled heartbeats removed")
    await wait_until(lambda: not list(counts.glob("old-*.json")), 10,
                     what="the old garbled traffic counts removed")
    assert beat.exists() and count.exists()

    env = {"KILLGATE_ADMIN_URL": second.admin, "KILLGATE_TOKEN": bearer("killgate:read")[
        "Authorization"].split()[1]}
    human = await acli("status", env=env)
    assert human.returncode == 0, human.stderr
    assert "Traceback" not in human.stdout + human.stderr and beat.stem not in human.stdout

    assert second.stop() == 0
    log = second.output()
    assert "Traceback" not in log, log
    for f in (beat, count, *(beats / f"old-{n}.json" for n in GARBLES),
              *(counts / f"old-{n}.json" for n in GARBLES)):
        lines = [ln for ln in log.splitlines() if str(f) in ln]
        assert len(lines) == 1, (f, lines, log)
        assert "warn" in lines[0].lower(), lines[0]
