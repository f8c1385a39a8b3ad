"""A/B: two builds of killgate, run alternately against the same backend, side by side.

On a shared 2-vCPU machine whole-run figures drift by ±10-20 % between runs, so a change
is judged against the build before it in one run, alternating A, B, A, B, ... Each build is
named by the `killgate` executable of its own environment (a clone with its own venv, say):

    .venv/bin/python benchmarks/ab.py /tmp/old/.venv/bin/killgate .venv/bin/killgate

Per round and build: a fresh `killgate serve` pinned to CPU 0, a warm-up, then `wrk -t1`
pinned to CPU 1 (POST, a KServe V2 body). Prints each round and a table of medians:
requests/s and the gateway's CPU µs per request (from /proc/<pid>/stat). Needs `wrk`;
`taskset` is optional.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _procs import Procs, bench_config, free_port, pinned, start_backend, wait_http

BODY = '{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.1,2.8,4.7,1.2]}]}'
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(conns: int, seconds: float, url: str, script: Path) -> str:
    return subprocess.run(pinned(1, ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency",
                                     "-s", str(script), url]),
                          capture_output=True, text=True, check=True).stdout


def one(exe: str, work: Path, backend: int, args: argparse.Namespace,
        script: Path) -> tuple[float, float, str]:
    procs = Procs()
    port, admin = free_port(), free_port()
    cfg = bench_config(work, port, admin, backend)
    try:
        gw = procs.start(pinned(0, [exe, "serve", "-c", str(cfg)]), work / "gateway.log")
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        url = f"http://127.0.0.1:{port}/v2/models/m/infer"
        wrk(args.connections, 2, url, script)  # warm-up
        c0 = cpu_seconds(gw.pid)
        out = wrk(args.connections, args.duration, url, script)
        c1 = cpu_seconds(gw.pid)
    finally:
        procs.stop()
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx.*|Socket errors.*", out)
    if bad:
        print(f"  warning: {bad.group(0)}", file=sys.stderr)
    return rps, (c1 - c0) / n * 1e6, p99


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="build A: its killgate executable")
    ap.add_argument("b", help="build B: its killgate executable")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="the backend's answer delay")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("benchmarks/ab.py needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 1
    results: dict[str, list[tuple[float, float, str]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="killgate-ab-") as tmp:
        root = Path(tmp)
        script = root / "post.lua"
        script.write_text(WRK_SCRIPT)
        procs = Procs()
        try:
            backend = start_backend(procs, root / "backend.log", args.delay_ms)
            for r in range(args.rounds):
                for label, exe in (("A", args.a), ("B", args.b)):
                    work = root / f"{label}{r}"
                    work.mkdir()
                    rps, us, p99 = one(exe, work, backend, args, script)
                    results[label].append((rps, us, p99))
                    print(f"round {r + 1} {label}: {rps:9,.0f} req/s {us:6.1f} µs/req "
                          f"p99 {p99}", file=sys.stderr, flush=True)
        finally:
            procs.stop()
    print(f"\nA = {args.a}\nB = {args.b}\n{args.rounds} alternate rounds, c={args.connections}, "
          f"{args.duration:g} s each, backend delay {args.delay_ms:g} ms\n")
    print("| build | median req/s | median µs/req | rounds (req/s) |")
    print("|---|---|---|---|")
    for label in ("A", "B"):
        rows = results[label]
        rps = statistics.median(r[0] for r in rows)
        us = statistics.median(r[1] for r in rows)
        each = " / ".join(f"{r[0]:,.0f}" for r in rows)
        print(f"| {label} | {rps:,.0f} | {us:.1f} | {each} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
