"""What request metrics and the access log cost a request, side by side in one run.

Variants of one build, each a fresh `killgate serve` pinned to CPU 0, run alternately
(off, metrics, metrics + access log, off, ...) against one backend, with `wrk -t1` pinned
to CPU 1 (POST, a KServe V2 body) and /metrics scraped once a second in every variant:

  off      telemetry.metrics.request_series: false  (no recording on the request path)
  metrics  the default: requests_total, the three histograms, the split gauges
  log      metrics + server.access_log: true, lines appended to a file

Prints each round, then the medians: requests/s and the gateway's CPU µs per request
(utime + stime from /proc/<pid>/stat over the measured run, divided by requests), and
each variant's difference from `off`. Also times the recorder alone, in process
(RequestStats.done and AccessLog.done per call), which no machine noise can blur.

    .venv/bin/python benchmarks/telemetry_cost.py [--rounds 5 --duration 10 --connections 64]

Needs `wrk`; `taskset` is optional.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import timeit
import urllib.request
from pathlib import Path

from _procs import Procs, free_port, pinned, start_backend, wait_http
from ab import WRK_SCRIPT, cpu_seconds, wrk

VARIANTS = {
    "off": "telemetry: {metrics: {request_series: false}}\n",
    "metrics": "",
    "log": "server: {access_log: true}\ntelemetry: {access_log: {path: access.jsonl}}\n",
}


def config(work: Path, port: int, admin: int, backend: int, extra: str) -> Path:
    cfg = work / "killgate.yaml"
    cfg.write_text(f"""listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}}}
state: {{backend: local, path: {work}/store.json, snapshot_path: {work}/snap.json}}
log: {{level: warning}}
{extra}routes:
  - name: bench
    match: {{path_prefix: /}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:{backend}", weight: 100}}
""")
    return cfg


def scraper(url: str, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
        except OSError:
            pass


def one(variant: str, work: Path, backend: int, args: argparse.Namespace,
        script: Path) -> tuple[float, float, float]:
    procs = Procs()
    port, admin = free_port(), free_port()
    cfg = config(work, port, admin, backend, VARIANTS[variant])
    stop = threading.Event()
    try:
        gw = procs.start(pinned(0, [sys.executable, "-m", "gateway", "serve", "-c", str(cfg)]),
                         work / "gateway.log")
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        url = f"http://127.0.0.1:{port}/v2/models/m/infer"
        wrk(args.connections, 2, url, script, 1)  # warm-up (wrk on CPU 1)
        th = threading.Thread(target=scraper, args=(f"http://127.0.0.1:{admin}/metrics", stop))
        th.start()
        i0 = cpu_seconds(gw.pid)
        time.sleep(args.idle)
        idle = (cpu_seconds(gw.pid) - i0) / args.idle  # background work, CPU s per s
        c0 = cpu_seconds(gw.pid)
        t0 = time.monotonic()
        out = wrk(args.connections, args.duration, url, script, 1)
        c1 = cpu_seconds(gw.pid)
        took = time.monotonic() - t0
        stop.set()
        th.join()
    finally:
        stop.set()
        procs.stop()
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, (c1 - c0) / n * 1e6, (c1 - c0 - idle * took) / n * 1e6


def in_process(n: int = 200_000) -> dict[str, float]:
    """µs per call of each recorder's `done`, and of building the record itself."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from gateway.config_telemetry import AccessLogConfig, BucketsConfig
    from gateway.telemetry.accesslog import AccessLog
    from gateway.telemetry.metrics import Metrics
    from gateway.telemetry.record import RequestRecord
    from gateway.telemetry.requests import RequestStats

    def record() -> RequestRecord:
        r = RequestRecord(1.0)
        r.route, r.version, r.decision, r.stable, r.status = "bench", "v1", "weighted", "v1", 200
        r.upstream, r.bytes_out, r.end = 0.002, 120, 1.003
        return r

    stats = RequestStats(BucketsConfig())
    log = AccessLog(AccessLogConfig(buffer=n + 1), Metrics(), Path)
    rec = record()
    out = {}
    for name, fn in (("record", record), ("RequestStats.done", lambda: stats.done(rec)),
                     ("AccessLog.done", lambda: log.done(rec))):
        out[name] = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="the backend's answer delay")
    ap.add_argument("--idle", type=float, default=3.0,
                    help="seconds of idle CPU measured before each run (subtracted)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("benchmarks/telemetry_cost.py needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 1
    micro = in_process()
    results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="killgate-telemetry-") as tmp:
        root = Path(tmp)
        script = root / "post.lua"
        script.write_text(WRK_SCRIPT)
        procs = Procs()
        try:
            backend = start_backend(procs, root / "backend.log", args.delay_ms)
            for r in range(args.rounds):
                order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    work = root / f"{variant}{r}"
                    work.mkdir()
                    rps, us, busy = one(variant, work, backend, args, script)
                    results[variant].append((rps, us, busy))
                    print(f"round {r + 1} {variant:8s}: {rps:9,.0f} req/s {us:6.1f} µs/req "
                          f"({busy:.1f} without idle work)", file=sys.stderr, flush=True)
        finally:
            procs.stop()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}: {args.rounds} alternating rounds, "
          f"c={args.connections}, {args.duration:g} s each, backend delay {args.delay_ms:g} ms, "
          "/metrics scraped every second\n")
    print("CPU µs/req: the gateway's CPU over the run / requests; 'busy': minus its idle CPU "
          "(background tasks, the scrapes) over the same time, which otherwise weighs more "
          "when the shared machine lets fewer requests through\n")
    print("| variant | median req/s | median CPU µs/req | busy µs/req | busy vs off (µs) | "
          "busy vs off (%) |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(b for _, _, b in results["off"])
    for variant, rows in results.items():
        rps = statistics.median(r for r, _, _ in rows)
        us = statistics.median(u for _, u, _ in rows)
        busy = statistics.median(b for _, _, b in rows)
        print(f"| {variant} | {rps:,.0f} | {us:.1f} | {busy:.1f} | {busy - base:+.2f} | "
              f"{(busy - base) / base * 100:+.1f} % |")
    print("\nIn process (best of 5 x 200,000 calls):\n")
    print("| call | µs |")
    print("|---|---|")
    for name, us in micro.items():
        print(f"| {name} | {us:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
