"""What tracing costs a request: CPU per request, paired side by side in one run.

    .venv/bin/python benchmarks/tracing.py [--rounds 5] [--duration 10] [--connections 16]

Variants, each a fresh `killgate serve` (1 worker, pinned to CPU 0) in every round, rounds
alternating the variants (a shared 2-vCPU machine drifts between runs, not within a round):

* `without` — the source tree before tracing was added (`git merge-base HEAD main`, or
  `--without REV`), checked out in a temporary worktree and run with this venv;
* `off` — this tree, no `telemetry:` section (the request path holds no tracer);
* `0%` / `1%` / `100%` — this tree, `telemetry.otlp_endpoint` at `benchmarks/otlp_sink.py`
  (its own process, CPU 1) and `traces.sample_ratio` 0 / 0.01 / 1.0 (OTLP metrics off, to
  measure tracing alone; 0% is the unsampled path alone: the decision on every request).

Load: `wrk -t1` (CPU 1) POSTing a KServe-V2 body to `benchmarks/backend.py` (CPU 1) through
the gateway, after a warm-up. CPU per request is the gateway process's utime + stime (all its
threads: the span exporter's too) over the requests wrk completed. Prints every round and a
table of medians with each variant's CPU relative to `without` and to `off`. Needs wrk and git.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from _procs import Procs, bench_config, free_port, pinned, start_backend, wait_http
from ab import WRK_SCRIPT, cpu_seconds, wrk

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("without", "off", "0%", "1%", "100%")
RATIO = {"0%": 0.0, "1%": 0.01, "100%": 1.0}


def run_one(variant: str, tree: Path, work: Path, backend: int, sink: int,
            args: argparse.Namespace, script: Path) -> tuple[float, float, float]:
    import re

    procs = Procs()
    port, admin = free_port(), free_port()
    cfg = bench_config(work, port, admin, backend)
    env = {"OTEL_METRICS_EXPORTER": "none"}
    if variant in RATIO:
        cfg.write_text(cfg.read_text().replace("routes:", (
            f"telemetry:\n  otlp_endpoint: http://127.0.0.1:{sink}\n"
            f"  traces: {{sample_ratio: {RATIO[variant]}}}\nroutes:"), 1))
    try:
        gw = procs.start(pinned(0, [sys.executable, "-m", "gateway", "serve", "-c", str(cfg)]),
                         work / "gateway.log", env=dict(env, PYTHONPATH=str(tree)))
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        url = f"http://127.0.0.1:{port}/v2/models/m/infer"
        wrk(args.connections, 2, url, script, 1)  # warm-up (wrk on CPU 1)
        c0 = cpu_seconds(gw.pid)
        out = wrk(args.connections, args.duration, url, script, 1)
        c1 = cpu_seconds(gw.pid)
    finally:
        procs.stop()
    n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)
    assert p99 is not None
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    bad = re.search(r"Non-2xx.*|Socket errors.*", out)
    if bad:
        print(f"  warning ({variant}): {bad.group(0)}", file=sys.stderr)
    return rps, (c1 - c0) / n * 1e6, float(p99.group(1)) * scale


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--without", default=None, help="git revision without tracing "
                    "(default: git merge-base HEAD main)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="a comma-separated subset of " + ", ".join(VARIANTS).replace("%", "%%"))
    args = ap.parse_args()
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    for tool in ("wrk", "git"):
        if shutil.which(tool) is None:
            print(f"benchmarks/tracing.py needs {tool}", file=sys.stderr)
            return 1
    rev = args.without or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT,
                                         capture_output=True, text=True,
                                         check=True).stdout.strip()
    results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="killgate-tracing-") as tmp:
        root = Path(tmp)
        old = root / "without"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=ROOT,
                       check=True, capture_output=True)
        trees = {"without": old}
        script = root / "post.lua"
        script.write_text(WRK_SCRIPT)
        procs = Procs()
        try:
            backend = start_backend(procs, root / "backend.log", 0.0)
            sink = free_port()
            procs.start(pinned(1, [sys.executable, str(Path(__file__).with_name("otlp_sink.py")),
                                   "--port", str(sink)]), root / "sink.log")
            wait_http(f"http://127.0.0.1:{sink}/")
            for r in range(args.rounds):
                for v in variants:
                    work = root / f"{v.strip('%')}-{r}"
                    work.mkdir()
                    res = run_one(v, trees.get(v, ROOT), work, backend, sink, args, script)
                    results[v].append(res)
                    print(f"round {r + 1} {v:>7}: {res[0]:8,.0f} req/s {res[1]:6.1f} µs/req "
                          f"p99 {res[2]:.2f} ms", file=sys.stderr, flush=True)
            with urllib.request.urlopen(f"http://127.0.0.1:{sink}/") as resp:
                sink_stats = resp.read().decode()
        finally:
            procs.stop()
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True)
    med = {v: (statistics.median(x[0] for x in rows), statistics.median(x[1] for x in rows),
               statistics.median(x[2] for x in rows)) for v, rows in results.items()}
    print(f"\nwithout = {rev[:12]}; {args.rounds} alternating rounds, c={args.connections}, "
          f"{args.duration:g} s each; collector sink received {sink_stats}\n")
    print("| variant | median req/s | median CPU µs/req | vs without | vs off | median p99 ms "
          "| rounds (µs/req) |")
    print("|---|---|---|---|---|---|---|")
    base = {k: med[k][1] if k in med else math.nan for k in ("without", "off")}
    for v in variants:
        rps, us, p99 = med[v]
        each = " / ".join(f"{x[1]:.1f}" for x in results[v])
        print(f"| {v} | {rps:,.0f} | {us:.1f} | {us / base['without'] - 1:+.1%} | "
              f"{us / base['off'] - 1:+.1%} | {p99:.2f} | {each} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
