"""What holds an idle instance's event loop, and how often: where a kill's push waits.

Run:  .venv/bin/python benchmarks/loop_holds.py [--config bench|example] [--seconds 60]

Starts a redis-server, benchmarks/backend.py and three `killgate serve` instances on one
Redis, each with benchmarks/loopholds/ first on PYTHONPATH (its sitecustomize times every
callback the loop runs through call_soon/call_later/call_at, task steps included, and every
gc collection), leaves them idle for --seconds, stops them and prints, over the three:
each callback that ran longer than --us (100 µs of CPU), how often and how long, and the
share of the loop's time it holds; every collection by generation. `bench` is
benchmarks/killswitch.py's config (the kill benchmark's fleet); `example` is
config/killgate.yaml (every section: health checks, a shadow, alerts, events, drills)
pointed at the local backend and Redis.

A push that arrives while a callback of wall time d holds the loop waits d/2 on average;
the share of time held by runs longer than x is the chance a kill on one instance waits
more than ~x/2; with three instances a kill waits for the worst of three.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _procs import Procs, free_port, wait_http  # noqa: E402
from killswitch import gateway_config  # noqa: E402

PROCS = Procs()


def example_config(tmp: Path, name: str, backend_port: int, redis_url: str) -> tuple[Path, int]:
    text = (ROOT / "config" / "killgate.yaml").read_text()
    port, admin = free_port(), free_port()
    text = text.replace("listen: 0.0.0.0:8080", f"listen: 127.0.0.1:{port}", 1)
    text = text.replace("listen: 127.0.0.1:8081", f"listen: 127.0.0.1:{admin}", 1)
    text = text.replace("redis://127.0.0.1:6379/0", redis_url)
    text = text.replace("var/killgate-state.json", f"{tmp}/state/snap-{name}.json")
    text = re.sub(r"http://127\.0\.0\.1:\d+", f"http://127.0.0.1:{backend_port}", text)
    text = text.replace("https://hooks.example.com/killgate",
                        f"http://127.0.0.1:{backend_port}/hook")
    (tmp / "conf").mkdir(exist_ok=True)
    p = tmp / "conf" / f"{name}.yaml"
    p.write_text(text)
    return p, admin


def run(kind: str, seconds: float) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="killgate-holds-"))
    out = tmp / "holds"
    out.mkdir()
    (tmp / "state").mkdir()
    try:
        rport = free_port()
        PROCS.start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save",
                     "", "--appendonly", "no"], tmp / "redis.log")
        redis_url = f"redis://127.0.0.1:{rport}/0"
        bport = free_port()
        PROCS.start([sys.executable, str(ROOT / "benchmarks/backend.py"), "--port",
                     str(bport)], tmp / "backend.log")
        wait_http(f"http://127.0.0.1:{bport}/")
        env = {"PYTHONPATH": f"{ROOT / 'benchmarks' / 'loopholds'}:{ROOT}",
               "KG_HOLDS_OUT": str(out), "KILLGATE_EVENTS_SECRET": "e" * 40}
        admins = []
        for name in ("a", "b", "c"):
            if kind == "bench":
                cfg, _, admin = gateway_config(tmp, name, bport, redis_url)
            else:
                cfg, admin = example_config(tmp, name, bport, redis_url)
            PROCS.start([sys.executable, "-m", "gateway", "serve", "-c", str(cfg)],
                        tmp / f"{name}.log", env=env)
            admins.append(admin)
        for a in admins:
            wait_http(f"http://127.0.0.1:{a}/readyz", timeout=30)
        time.sleep(seconds)  # idle: what the instances do by themselves
    finally:
        PROCS.stop()
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("holds-*.json"))]
    if len(docs) != 3:
        raise SystemExit(f"{len(docs)} of 3 instances wrote their figures: logs in {tmp}")
    shutil.rmtree(tmp, ignore_errors=True)
    return docs


def report(docs: list[dict], us: float, start_s: float) -> None:
    secs = sum(d["seconds"] - start_s for d in docs)
    long_by: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for d in docs:
        for name, cpu, wall, at in d["long"]:
            if at >= start_s and cpu >= us * 1000:
                long_by[name].append((cpu, wall))
    print(f"\n{len(docs)} instances, {secs:.0f} instance-seconds after the first {start_s:g} s;"
          f" callbacks over {us:g} µs of CPU:\n")
    print(f"{'callback':<96} {'runs/min':>8} {'cpu p50':>8} {'cpu max':>8} "
          f"{'wall p50':>8} {'held %':>7}")
    rows = sorted(long_by.items(), key=lambda kv: -sum(w for _, w in kv[1]))
    for name, xs in rows:
        cpus = sorted(c for c, _ in xs)
        walls = sorted(w for _, w in xs)
        print(f"{name[:96]:<96} {len(xs) / secs * 60:>8.1f} {cpus[len(cpus) // 2] / 1e3:>7.0f}µ"
              f" {cpus[-1] / 1e3:>7.0f}µ {walls[len(walls) // 2] / 1e3:>7.0f}µ"
              f" {sum(walls) / secs / 1e7:>6.3f}%")
    allw = sum(w for xs in long_by.values() for _, w in xs)
    print(f"\nheld by those runs: {allw / secs / 1e7:.3f} % of the loop's time")
    gcs: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
    for d in docs:
        for gen, cpu, _wall, at, inside in d["gcs"]:
            if at >= start_s:
                gcs[gen].append((cpu, inside))
    if not gcs:
        print(f"gc: no collection after the first {start_s:g} s (gc.freeze at start)")
    for gen in sorted(gcs):
        xs = sorted(c for c, _ in gcs[gen])
        where: dict[str, int] = defaultdict(int)
        for _, inside in gcs[gen]:
            where[(inside or "outside a timed callback")[:70]] += 1
        top = ", ".join(f"{n} ({k})" for n, k in sorted(where.items(), key=lambda kv: -kv[1])[:3])
        print(f"gc gen {gen}: {len(xs) / secs * 60:.1f}/min, cpu p50 {xs[len(xs) // 2] / 1e3:.0f}"
              f" µs, max {xs[-1] / 1e3:.0f} µs; in: {top}")
    tot = defaultdict(lambda: [0, 0])
    for d in docs:
        for name, (runs, cpu, _w, _m) in d["agg"].items():
            tot[name][0] += runs
            tot[name][1] += cpu
    print("\nall callbacks by CPU a minute, the start included (top 15):")
    for name, (runs, cpu) in sorted(tot.items(), key=lambda kv: -kv[1][1])[:15]:
        print(f"  {name[:100]:<100} {runs / secs * 60:>8.1f}/min {cpu / secs * 60 / 1e6:>8.2f} ms/min")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=("bench", "example"), default="bench")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--us", type=float, default=100, help="CPU threshold of a long run (µs)")
    ap.add_argument("--skip", type=float, default=5,
                    help="seconds after each instance's loop began left out (its start)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is missing: apt-get install -y redis-server", file=sys.stderr)
        return 1
    docs = run(args.config, args.seconds)
    if args.json is not None:
        args.json.write_text(json.dumps(docs))
    report(docs, args.us, args.skip)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
