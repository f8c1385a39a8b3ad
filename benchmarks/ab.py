"""A/B: sides run alternately against the same backend, so their ratios share the weather.

On a shared 2-vCPU machine whole-run figures drift by ±10-20 % between runs (far more when
other work is running), so a change is judged against the build before it in one run,
alternating A, B, A, B, ... A side is a `killgate` executable of its own environment (a
clone with its own venv, say), `nginx` (nginx doing the same proxying), or `direct` (wrk to
the backend itself), optionally with `@N` worker processes:

    .venv/bin/python benchmarks/ab.py /tmp/old/.venv/bin/killgate .venv/bin/killgate
    .venv/bin/python benchmarks/ab.py .venv/bin/killgate nginx .venv/bin/killgate@2
    .venv/bin/python benchmarks/ab.py direct .venv/bin/killgate nginx --delay-ms 5

Per round and side: a fresh process (1 worker: pinned to CPU 0, wrk to CPU 1; more workers:
unpinned), a warm-up, then `wrk` (POST, a KServe V2 body). Prints each round and a table
of medians: requests/s, the proxy's CPU µs per request (its process tree, from
/proc/<pid>/stat), p50 and p99, and each side's ratio to the first side. Needs `wrk`
(and `nginx` for that side); `taskset` is optional.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _procs import Procs, bench_config, free_port, pinned, start_backend, wait_http
from harness import WRK_SCRIPT, cpu_seconds, nginx_config

__all__ = ["WRK_SCRIPT", "cpu_seconds", "wrk"]  # (telemetry_cost, tracing, shadow use them)


def wrk(conns: int, seconds: float, url: str, script: Path, cpu: int | None) -> str:
    argv = ["wrk", f"-t{2 if conns >= 64 else 1}", f"-c{conns}", f"-d{seconds:g}s", "--latency",
            "-s", str(script), url]
    return subprocess.run(pinned(cpu, argv) if cpu is not None else argv,
                          capture_output=True, text=True, check=True).stdout


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m is not None, text
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def side(spec: str) -> tuple[str, int]:
    name, _, workers = spec.partition("@")
    return name, int(workers or 1)


def one(spec: str, work: Path, backend: int, args: argparse.Namespace,
        script: Path) -> tuple[float, float, float, float]:
    """One measured run of one side: req/s, CPU µs/req (0 for direct), p50 ms, p99 ms."""
    name, workers = side(spec)
    pin = workers == 1
    procs = Procs()
    port = free_port()
    try:
        if name == "direct":
            pid, port = 0, backend
        elif name == "nginx":
            conf = work / "nginx.conf"
            conf.write_text(nginx_config(work, port, backend, workers))
            argv = ["nginx", "-p", f"{work}/", "-c", str(conf), "-e", str(work / "error.log"),
                    "-g", "daemon off;"]
            pid = procs.start(pinned(0, argv) if pin else argv, work / "nginx.log").pid
            wait_http(f"http://127.0.0.1:{port}/")
        else:
            admin = free_port()
            cfg = bench_config(work, port, admin, backend)
            argv = [name, "serve", "-c", str(cfg), "--workers", str(workers)]
            pid = procs.start(pinned(0, argv) if pin else argv, work / "gateway.log").pid
            wait_http(f"http://127.0.0.1:{admin}/readyz")
        url = f"http://127.0.0.1:{port}/v2/models/m/infer"
        cpu = 1 if pin else None
        wrk(args.connections, 2, url, script, cpu)  # warm-up
        c0 = cpu_seconds(pid) if pid else 0.0
        out = wrk(args.connections, args.duration, url, script, cpu)
        c1 = cpu_seconds(pid) if pid else 0.0
    finally:
        procs.stop()
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx.*|Socket errors.*", out)
    if bad:
        print(f"  warning: {bad.group(0)}", file=sys.stderr)
    return rps, (c1 - c0) / n * 1e6, p50, p99


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sides", nargs="+",
                    help="killgate executables, `nginx` or `direct`, each optionally @WORKERS")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="the backend's answer delay")
    args = ap.parse_args()
    if len(args.sides) < 2:
        ap.error("give at least two sides")
    needed = ["wrk"] + (["nginx"] if any(side(s)[0] == "nginx" for s in args.sides) else [])
    for tool in needed:
        if shutil.which(tool) is None:
            print(f"benchmarks/ab.py needs {tool} (apt-get install -y {tool})", file=sys.stderr)
            return 1
    labels = [chr(ord("A") + i) for i in range(len(args.sides))]
    results: dict[str, list[tuple[float, float, float, float]]] = {lb: [] for lb in labels}
    with tempfile.TemporaryDirectory(prefix="killgate-ab-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx workers may run as an unprivileged user
        script = root / "post.lua"
        script.write_text(WRK_SCRIPT)
        procs = Procs()
        try:
            backend = start_backend(procs, root / "backend.log", args.delay_ms)
            for r in range(args.rounds):
                for label, spec in zip(labels, args.sides, strict=True):
                    work = root / f"{label}{r}"
                    work.mkdir()
                    work.chmod(0o755)
                    got = one(spec, work, backend, args, script)
                    results[label].append(got)
                    print(f"round {r + 1} {label}: {got[0]:9,.0f} req/s {got[1]:6.1f} µs/req "
                          f"p50 {got[2]:.3f} ms p99 {got[3]:.2f} ms", file=sys.stderr, flush=True)
        finally:
            procs.stop()
    print()
    for label, spec in zip(labels, args.sides, strict=True):
        print(f"{label} = {spec}")
    print(f"{args.rounds} alternate rounds, c={args.connections}, {args.duration:g} s each, "
          f"backend delay {args.delay_ms:g} ms\n")
    print("| side | median req/s | median CPU µs/req | median p50 ms | median p99 ms | "
          "req/s vs A | CPU/req vs A | rounds (req/s) |")
    print("|---|---|---|---|---|---|---|---|")
    base = [statistics.median(r[i] for r in results["A"]) for i in range(4)]
    for label in labels:
        rows = results[label]
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        each = " / ".join(f"{r[0]:,.0f}" for r in rows)
        cpu_ratio = f"{med[1] / base[1]:.2f}" if base[1] and med[1] else "-"
        print(f"| {label} | {med[0]:,.0f} | {med[1]:.1f} | {med[2]:.3f} | {med[3]:.2f} | "
              f"{med[0] / base[0]:.2f} | {cpu_ratio} | {each} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
