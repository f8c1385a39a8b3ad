"""Two instances that share a host name and a snapshot path, not a snapshot file, are not
sibling workers (state/vouching.py's `sibling_tag`).

Containers on one host with host networking (or given one `hostname:`), each with its own
volume mounted at the same path, are such instances. Real `killgate serve` processes, each
in its own mount namespace where its own folder is mounted at the shared path (what a
container runtime does), on a real redis-server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from gateway.domain.statedoc import StateDoc
from gateway.domain.stateparts import KillFlag
from tests.conftest import ROOT, RedisServer, die_with_parent, free_port, wait_until_sync, write_config
from tests.staterig import redis_state


def _can_unshare() -> bool:
    """Root alone is not enough: a container without CAP_SYS_ADMIN refuses the namespace."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not _can_unshare(),
                       reason="needs unshare(1) and the right to make a mount namespace"),
]

ROUTES = """\
- name: iris
  match: {path_prefix: /v2/models/iris}
  stable: v1
  versions:
    - {name: v1, url: "http://127.0.0.1:9", weight: 100}
"""

#: run `killgate serve` with folder $1 mounted at $2, in a mount namespace of its own
_IN_NS = 'mount --bind "$1" "$2" && exec "$3" -m gateway serve -c "$4"'


@contextmanager
def contained(volume: Path, at: Path, config: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(config.parent / "gateway.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _IN_NS, "sh",
         str(volume), str(at), sys.executable, str(config)],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        preexec_fn=die_with_parent)
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        log.close()


def unverifiable_snapshot(path: Path) -> None:
    """A snapshot no key verifies (written before state signing): its kills only."""
    flag = KillFlag("route", "iris", None, "alice", "bad", "2026-12-04T00:00:00Z", 0)
    path.write_text(json.dumps(StateDoc(generation=3, kills={"route:iris": flag}).to_json()))
    path.chmod(0o600)


def test_a_container_with_the_same_host_name_and_snapshot_path_vouches_for_its_peer(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """A and B start on snapshots they cannot verify, each its own file at the same path
    on a host of the same name; A seeds the empty store and B verifies that seed, written
    by another instance with its key: B's key is the fleet's. B took A's epoch for one of
    its own workers' (same host name, same path: same tag) and stayed "not known to be the
    fleet's" for good (each snapshot it wrote said so, and a document it cannot verify in
    the store would make it refuse writes and go unready instead of repairing)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in ("a", "b"):
        (tmp_path / name / "volume").mkdir(parents=True)
        unverifiable_snapshot(tmp_path / name / "volume" / "snapshot-x.json")

    def config(name: str) -> Path:
        return write_config(tmp_path / name, ROUTES,
                            state=redis_state(redis_server, shared, "x"),
                            listen=f"127.0.0.1:{free_port()}",
                            admin=f"127.0.0.1:{free_port()}")

    def seeded() -> bool:
        return "route:iris" in (redis_server.cmd("GET", "kgtest:state") or "")

    def b_wrote() -> bool:
        raw = (tmp_path / "b" / "volume" / "snapshot-x.json").read_bytes()
        return raw.startswith(b"KGS1 ")  # (rewritten by B, signed)

    with contained(tmp_path / "a" / "volume", shared, config("a")) as a:
        wait_until_sync(lambda: a.poll() is None and seeded(), 30, what="A seeding the store")
        with contained(tmp_path / "b" / "volume", shared, config("b")) as b:
            wait_until_sync(lambda: b.poll() is None and b_wrote(), 30,
                            what="B writing its snapshot")
            raw = (tmp_path / "b" / "volume" / "snapshot-x.json").read_bytes()
            body = json.loads(raw.partition(b"\n")[2])
            assert "route:iris" in body["kills"]  # (the kill kept)
            assert "unverified_origin" not in body, body["unverified_origin"]
    # (A's own snapshot still says where its state came from: it verified only its own)
    raw = (tmp_path / "a" / "volume" / "snapshot-x.json").read_bytes()
    assert raw.startswith(b"KGS1 ") and b"unverified_origin" in raw
