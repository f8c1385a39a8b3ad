"""Sustained overload (RELIABILITY row 40): goodput, shed share and admitted latency when
offered 0.5x, 1x and 1.5x what the backend can serve, open-loop.

    .venv/bin/python benchmarks/overload.py [--delay-ms 50 --pool 16 --duration 8]

The backend answers after `--delay-ms` and killgate holds at most `--pool` connections to
it, so its capacity is about pool / delay (320 req/s by default: low enough that one
Python load-generating process can offer 1.5x of it on schedule). Capacity is measured
first, closed-loop (wrk). Then `benchmarks/openloop.py` offers each multiple of it at a fixed
rate, for two settings of `server.max_pending_per_backend` side by side: the default (1024,
Envoy's default `max_pending_requests` too) and a short queue. Prints a Markdown table.
The gateway is pinned to CPU 0; the backend, wrk and the generator to CPU 1.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _procs import Procs, bench_config, free_port, pct, pinned, start_backend, wait_http

HERE = Path(__file__).resolve().parent


def capacity(url: str, conns: int, lua: Path) -> float:
    out = subprocess.run(pinned(1, ["wrk", "-t1", f"-c{conns}", "-d3s", "-s", str(lua), url]),
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def offer(url: str, rate: float, duration: float) -> dict[str, object]:
    out = subprocess.run(pinned(1, [sys.executable, str(HERE / "openloop.py"), url, "--rate",
                                    f"{rate:.1f}", "--duration", f"{duration:g}"]),
                         capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--pool", type=int, default=16)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--factors", default="0.5,1.0,1.5")
    ap.add_argument("--pending", default="1024,16", help="max_pending_per_backend settings")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("benchmarks/overload.py needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 1
    factors = [float(f) for f in args.factors.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="killgate-overload-") as tmp:
        root = Path(tmp)
        lua = root / "post.lua"
        lua.write_text('wrk.method = "POST"\nwrk.body = \'{"inputs":[]}\'\n'
                       'wrk.headers["Content-Type"] = "application/json"\n')
        procs = Procs()
        try:
            backend = start_backend(procs, root / "backend.log", args.delay_ms)
            for pending in (int(p) for p in args.pending.split(",")):
                work = root / f"pending-{pending}"
                work.mkdir()
                port, admin = free_port(), free_port()
                cfg = bench_config(work, port, admin, backend,
                                   server=f"max_connections_per_backend: {args.pool}, "
                                          f"max_pending_per_backend: {pending}",
                                   route="outlier: {enabled: false}")
                gw = Procs()
                try:
                    gw.start(pinned(0, [sys.executable, "-m", "gateway", "serve", "-c", str(cfg)]),
                             work / "gateway.log")
                    wait_http(f"http://127.0.0.1:{admin}/readyz")
                    url = f"http://127.0.0.1:{port}/v2/models/m/infer"
                    cap = capacity(url, args.pool * 2, lua)
                    print(f"max_pending {pending}: capacity {cap:.0f} req/s", file=sys.stderr)
                    for f in factors:
                        res = offer(url, f * cap, args.duration)
                        rows.append((pending, f, cap, res))
                        print(f"  offered {f:g}x: done", file=sys.stderr, flush=True)
                finally:
                    gw.stop()
        finally:
            procs.stop()
    print(f"\nbackend delay {args.delay_ms:g} ms, {args.pool} backend connections, open-loop "
          f"{args.duration:g} s per row\n")
    print("| max_pending | offered | offered req/s | goodput req/s | 503 share | other errors "
          "| admitted p50 | admitted p99 | 503 p99 | generator slip |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pending, f, cap, res in rows:
        results = [tuple(r) for r in res["results"]]  # type: ignore[attr-defined]
        ok = [lat for status, lat in results if status == 200]
        shed = [lat for status, lat in results if status == 503]
        other = len(results) - len(ok) - len(shed)
        n = max(1, len(results))
        elapsed = float(res["elapsed_s"])  # type: ignore[arg-type]  # (queued answers end late)
        print(f"| {pending} | {f:g}x | {f * cap:.0f} | {len(ok) / elapsed:.0f} | "
              f"{len(shed) / n:.0%} | {other} | {pct(ok, 0.5) * 1000 if ok else 0:.0f} ms | "
              f"{pct(ok, 0.99) * 1000 if ok else 0:.0f} ms | "
              f"{pct(shed, 0.99) * 1000 if shed else 0:.0f} ms | {res['late_ms']} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
