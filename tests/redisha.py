"""Redis for a fleet on loopback: the `state:` section a redis-backed instance needs, and a
master + replica + three sentinels (real redis-server / redis-server --sentinel processes on
free loopback ports), for the failover test and the fleet benchmark."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from gateway.config import StateConfig
from tests.conftest import die_with_parent, free_port, wait_until_sync

__all__ = ["SENTINEL_PERIODS", "STATE_KEY_ENV", "RedisNode", "SentinelCluster", "redis_state_yaml",
           "state_key_env"]

STATE_KEY_ENV = "KILLGATE_STATE_KEY"


def state_key_env() -> dict[str, str]:
    """The state signing key for the processes a test starts (a fresh one per call site)."""
    return {STATE_KEY_ENV: os.environ.get(STATE_KEY_ENV) or secrets.token_hex(32)}


def redis_state_yaml(url: str, snapshot: str, prefix: str = "kgfleet", **opts: str) -> str:
    """A `state:` section for a redis store. Names the signing key variable when this build
    of the config knows `state.signing_key_env` (required with redis once it does)."""
    lines = {"poll_interval": "100ms", "heartbeat_interval": "200ms", "instance_lease": "2s",
             "command_timeout": "300ms", **opts}
    if "signing_key_env" in StateConfig.model_fields and "signing_key_env" not in lines:
        lines["signing_key_env"] = STATE_KEY_ENV
    return (f"state:\n  backend: redis\n  url: \"{url}\"\n  prefix: {prefix}\n"
            f"  snapshot_path: {snapshot}\n"
            + "".join(f"  {k}: {v}\n" for k, v in lines.items()))


def _cmd(port: int, *args: str, timeout: float = 2.0, host: str = "127.0.0.1") -> list[str]:
    """One command over a raw socket; the reply's lines (enough for INFO, ROLE, simple)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        s.settimeout(timeout)
        while True:
            chunk = s.recv(65536)
            data += chunk
            if not chunk or _complete(data):
                break
    return data.decode(errors="replace").split("\r\n")


def _complete(data: bytes) -> bool:
    if data[:1] in (b"+", b"-", b":"):
        return data.endswith(b"\r\n")
    if data[:1] == b"$":
        head, _, rest = data.partition(b"\r\n")
        n = int(head[1:])
        return n < 0 or len(rest) >= n + 2
    # arrays: good enough for the short ones we read (ROLE, sentinel replies)
    return data.endswith(b"\r\n") and len(data) > 4


class RedisNode:
    """A redis-server (or a sentinel) process of our own, without persistence."""

    def __init__(self, workdir: Path, name: str, sentinel: bool = False,
                 extra: list[str] | None = None, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.exe = shutil.which("redis-server")
        assert self.exe, "redis-server is not on PATH (apt-get install -y redis-server)"
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.host = host  # (another loopback address: several nodes on one port)
        self.port = free_port() if port is None else port
        self.sentinel = sentinel
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, conf: str = "") -> None:
        cfgfile = self.workdir / "redis.conf"
        # (a full sync starts at once: by default a diskless one waits 5 s for more replicas)
        sync = "" if self.sentinel else "repl-diskless-sync-delay 0\n"
        cfgfile.write_text(f"port {self.port}\nbind {self.host}\ndir {self.workdir}\n"
                           "save \"\"\nappendonly no\n" + sync + conf)
        args = [self.exe, str(cfgfile)] + (["--sentinel"] if self.sentinel else []) + self.extra
        if hasattr(self, "log"):
            self.log.close()  # a restart
        self.log = open(self.workdir / "out.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)
        wait_until_sync(self._answers, 10.0, what=f"{self.name} to answer")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {(self.workdir / 'out.log').read_text()}")
        try:
            return self.cmd("PING")[0] == "+PONG"
        except OSError:
            return False

    def cmd(self, *args: str) -> list[str]:
        return _cmd(self.port, *args, host=self.host)

    def info(self, section: str, field: str) -> str:
        for line in self.cmd("INFO", section):
            if line.startswith(field + ":"):
                return line.split(":", 1)[1]
        return ""

    def kill(self) -> None:
        """SIGKILL: the process is gone at once, as a crashed host would be."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()
        if hasattr(self, "log"):
            self.log.close()


# Sentinels at a test's pace: hellos every 0.5 s (2 s), so they find each other and, as they
# wait 4 hellos before making a returning old master a replica, reconfigure it in 2 s (8 s);
# INFO every 1 s (10 s). Every other period (ping, down-after, failover) as configured.
SENTINEL_PERIODS = ("publish-period", "500", "info-period", "1000")


class SentinelCluster:
    """A master, a replica and three sentinels (quorum 2) watching service `name`."""

    def __init__(self, workdir: Path, name: str = "kgmaster", down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000) -> None:
        self.name = name
        self.master = RedisNode(workdir, "master")
        self.replica = RedisNode(workdir, "replica")
        self.sentinels = [RedisNode(workdir, f"sentinel{i}", sentinel=True) for i in range(3)]
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.name}/0"

    def start(self) -> None:
        self.master.start()
        # a replica that answers no faster than the master, and takes over when asked
        self.replica.start(f"replicaof 127.0.0.1 {self.master.port}\nreplica-priority 100\n")
        # (online: it has acked once, so a WAIT counts it; right after a sync it may not have)
        wait_until_sync(lambda: self.replica.info("replication", "master_link_status") == "up"
                        and "state=online" in self.master.info("replication", "slave0"),
                        10, what="the replica to sync")
        for s in self.sentinels:
            s.start(f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {self.name} 1\n")
            s.cmd("SENTINEL", "DEBUG", *SENTINEL_PERIODS)
        # every sentinel knows the replica and the other two before anything is failed over
        def aware() -> bool:
            for s in self.sentinels:
                info = s.info("sentinel", "master0")
                if "slaves=1,sentinels=3" not in info:
                    return False
            return True

        wait_until_sync(aware, 20, 0.05, "the sentinels to see the replica and each other")

    def master_port(self) -> int:
        """The master's port as the first answering sentinel names it."""
        for s in self.sentinels:
            try:
                lines = s.cmd("SENTINEL", "get-master-addr-by-name", self.name)
            except OSError:
                continue
            ports = [ln for ln in lines if ln.isdigit()]
            if ports:
                return int(ports[-1])
        raise AssertionError("no sentinel answered")

    def wait_failover(self, old_port: int, timeout: float = 20.0) -> int:
        """Until every sentinel names a new master and that node says it is one."""
        def moved() -> bool:
            ports = set()
            for s in self.sentinels:
                lines = s.cmd("SENTINEL", "get-master-addr-by-name", self.name)
                ports.add(int([ln for ln in lines if ln.isdigit()][-1]))
            return len(ports) == 1 and old_port not in ports

        t0 = time.monotonic()
        wait_until_sync(moved, timeout, 0.05, "the sentinels to fail over")
        new = self.master_port()
        node = self.replica if new == self.replica.port else self.master
        wait_until_sync(lambda: node.info("replication", "role") == "master",
                        max(1.0, timeout - (time.monotonic() - t0)), 0.05,
                        "the promoted replica to be master")
        return new

    def stop(self) -> None:
        for n in [*self.sentinels, self.replica, self.master]:
            n.stop()
