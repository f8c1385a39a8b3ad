"""Process handling shared by the benchmark scripts: free ports, started children, waits.

Every child runs in its own session (so it and its children stop together), with a
throwaway admin secret; `Procs.stop` sends SIGTERM to every group, then SIGKILL to any
that has not exited within 10 s.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["SECRET", "Procs", "bench_config", "free_port", "pct", "pinned", "start_backend",
           "wait_http"]

SECRET = secrets.token_urlsafe(32)
STATE_KEY = secrets.token_hex(32)  # state.signing_key_env: KILLGATE_STATE_KEY (redis stores)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        e = dict(os.environ, KILLGATE_JWT_SECRET=SECRET, KILLGATE_STATE_KEY=STATE_KEY,
                 PYTHONUNBUFFERED="1")
        e.update(env or {})
        with open(log, "ab") as f:
            p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=e,
                                 start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def wait_http(url: str, timeout: float = 15) -> None:
    """Until `url` answers 2xx (readiness), or SystemExit after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:  # refused, or an HTTP error status (urllib.error.HTTPError)
            time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {url}")


def pinned(cpu: int, args: list[str]) -> list[str]:
    """`args` run on CPU `cpu` (when `taskset` is there and the CPU exists)."""
    ok = shutil.which("taskset") is not None and cpu < (os.cpu_count() or 1)
    return (["taskset", "-c", str(cpu)] if ok else []) + args


def start_backend(procs: Procs, log: Path, delay_ms: float, cpu: int = 1) -> int:
    """`benchmarks/backend.py` answering after `delay_ms`, pinned to `cpu`; its port once
    it answers."""
    port = free_port()
    procs.start(pinned(cpu, [sys.executable, str(Path(__file__).with_name("backend.py")),
                             "--port", str(port), "--delay-ms", f"{delay_ms:g}"]), log)
    wait_http(f"http://127.0.0.1:{port}/")
    return port


def bench_config(work: Path, port: int, admin: int, backend: int, server: str = "",
                 route: str = "") -> Path:
    """`work/killgate.yaml`: one route `bench` sending everything to one backend, local
    state under `work`, warnings only; `server` and `route` are extra flow-mapping lines."""
    cfg = work / "killgate.yaml"
    cfg.write_text(f"""listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}}}
state: {{backend: local, path: {work}/store.json, snapshot_path: {work}/snap.json}}
{f"server: {{{server}}}" if server else ""}
log: {{level: warning}}
routes:
  - name: bench
    match: {{path_prefix: /}}
    stable: v1
{f"    {route}" if route else ""}
    versions:
      - {{name: v1, url: "http://127.0.0.1:{backend}", weight: 100}}
""")
    return cfg
