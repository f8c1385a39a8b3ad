"""What asking the store's primary for its replicas costs (state.min_replicas: one command a
heartbeat interval, state/redisreplicas.py), beside the heartbeat it follows.

Starts a redis primary and a replica of it on loopback (redis-server on PATH), then times,
interleaved, N heartbeats (`RedisStore.heartbeat`: the script, signed) and N replica
checks (`RedisStore.replicas`: INFO replication; with --role, a user that may run only
ROLE), round trip as the sync loop sees it, and redis's own time per call (`INFO
commandstats`), and the reply's size.

    .venv/bin/python benchmarks/replica_check.py [--n 2000] [--role]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.state.redis import RedisStore
from gateway.state.signing import Key, Keyring


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=5, check=True).stdout


def _start(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(workdir), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if _cli(port, "PING").strip() == "PONG":
                return proc
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"redis-server on {port} did not start")


def _usec_per_call(port: int, command: str) -> float | None:
    for line in _cli(port, "INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            fields = dict(p.split("=", 1) for p in line.split(":", 1)[1].split(","))
            return float(fields["usec_per_call"])
    return None


async def _run(port: int, n: int, role: bool) -> None:
    url = f"redis://127.0.0.1:{port}/0"
    if role:
        _cli(port, "ACL", "SETUSER", "bench", "on", ">bench-pw", "~*", "&*", "+@all", "-info")
        url = f"redis://bench:bench-pw@127.0.0.1:{port}/0"
    keys = Keyring(Key.of(b"k" * 32), context="kgbench")
    store = RedisStore(url, "kgbench", 1.0, keys=keys)
    got = await store.replicas()
    assert got.connected == 1, got
    _cli(port, "CONFIG", "RESETSTAT")
    beats, checks = [], []
    for i in range(n):
        t0 = time.perf_counter()
        await store.heartbeat("bench", i)
        t1 = time.perf_counter()
        await store.replicas()
        t2 = time.perf_counter()
        beats.append((t1 - t0) * 1e6)
        checks.append((t2 - t1) * 1e6)
    await store.close()
    cmd = "role" if role else "info"
    reply = _cli(port, "ROLE") if role else _cli(port, "INFO", "replication")
    print(f"redis {_cli(port, 'INFO', 'server').split('redis_version:')[1].split()[0]}, "
          f"{n} of each, interleaved, loopback, {os.cpu_count()} CPUs")
    for name, xs in (("heartbeat (script)", beats), (f"replicas ({cmd.upper()})", checks)):
        xs.sort()
        print(f"  {name:22} p50 {statistics.median(xs):7.1f} us   p99 "
              f"{xs[int(len(xs) * 0.99) - 1]:7.1f} us   mean {statistics.fmean(xs):7.1f} us")
    print(f"  redis usec_per_call: evalsha {_usec_per_call(port, 'evalsha')}, "
          f"{cmd} {_usec_per_call(port, cmd)}; {cmd.upper()} reply ~{len(reply)} bytes "
          "(one replica)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--role", action="store_true", help="a redis user that may not run INFO")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        primary_port, replica_port = _free_port(), _free_port()
        primary = _start(primary_port, Path(tmp))
        (Path(tmp) / "r").mkdir()
        replica = _start(replica_port, Path(tmp) / "r", "--replicaof", "127.0.0.1",
                         str(primary_port))
        try:
            deadline = time.monotonic() + 15
            while "state=online" not in _cli(primary_port, "INFO", "replication"):
                if time.monotonic() > deadline:
                    raise SystemExit("the replica did not attach")
                time.sleep(0.05)
            asyncio.run(_run(primary_port, args.n, args.role))
        finally:
            for proc in (replica, primary):
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
