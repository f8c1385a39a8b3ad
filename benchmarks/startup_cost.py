"""What one `killgate serve` start costs in CPU, to ready.

Run:  .venv/bin/python benchmarks/startup_cost.py [--runs 7] [--telemetry]

Starts `python -m gateway serve` (one worker, local state, one route, no telemetry export
unless --telemetry) on free loopback ports, polls GET /readyz every 5 ms, and reads the
process's user+system CPU seconds from /proc/<pid>/stat the moment it answers 200 (the poll
itself costs the gateway a few answers: well under a millisecond each). Prints each run and
the median. The process is stopped with SIGTERM after each run.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _config(tmp: Path, telemetry: bool) -> Path:
    extra = ("telemetry:\n  otlp_endpoint: http://127.0.0.1:9\n" if telemetry else "")
    p = tmp / "killgate.yaml"
    p.write_text(
        f"listen: 127.0.0.1:{_free_port()}\nadmin:\n  listen: 127.0.0.1:{_free_port()}\n"
        "  auth:\n    hs256_secret_env: BENCH_SECRET\n"
        f"state: {{backend: local, path: {tmp}/store.json, snapshot_path: {tmp}/snap.json}}\n"
        + extra +
        "routes:\n  - name: iris\n    match: {path_prefix: /v2/models/iris}\n    stable: v1\n"
        "    versions:\n      - {name: v1, url: 'http://127.0.0.1:9101', weight: 100}\n")
    p.chmod(0o600)
    return p


def one_start(telemetry: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) from exec to the first 200 from /readyz."""
    with tempfile.TemporaryDirectory() as d:
        cfg = _config(Path(d), telemetry)
        admin = cfg.read_text().split("admin:\n  listen: ")[1].split("\n")[0]
        env = dict(os.environ, BENCH_SECRET="x" * 32)
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "-c", str(cfg)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited with {proc.returncode}")
                try:
                    with urllib.request.urlopen(f"http://{admin}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                time.sleep(0.005)
            return _cpu(proc.pid), time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--telemetry", action="store_true", help="with an OTLP endpoint configured")
    args = ap.parse_args()
    cpus, walls = [], []
    for i in range(args.runs):
        cpu, wall = one_start(args.telemetry)
        cpus.append(cpu)
        walls.append(wall)
        print(f"run {i + 1}: {cpu:.2f} s CPU, {wall:.2f} s wall to ready")
    print(f"median: {statistics.median(cpus):.2f} s CPU, {statistics.median(walls):.2f} s wall"
          f" ({args.runs} runs, telemetry export {'on' if args.telemetry else 'off'})")


if __name__ == "__main__":
    main()
