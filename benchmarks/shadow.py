"""Does mirroring every request to a shadow change the primary's latency? Paired, one run.

Two arms of one build, each a fresh `killgate serve` pinned to CPU 0, one route with two
backends (`benchmarks/backend.py`, both on CPU 1 with the load generator, each answering
after `--delay-ms`):

  off    no shadow (run twice per round: off-a and off-b, an A/A pair that measures noise)
  on     `shadow: {version: v2, sample: 1.0, max_inflight: 256}`: every answered request
         is copied to the second backend and the two answers compared

Each round runs off-a, on, off-b (the order rotates every round) with the open-loop
generator (`benchmarks/openloop.py`, pinned to CPU 1) at `--rate` for `--duration`
seconds, and measures the client's p50 and p99, and the gateway's CPU per primary request
(utime + stime over the run; "busy": minus the idle CPU measured just before it). Per
round: the A/A difference (off-b - off-a) and the shadow's (on - mean of the offs). The
verdict compares the median shadow difference with the largest A/A difference of the run.
The `on` arm's shadow report (compared, agreement, dropped) says the copies really went.
Also timed in process: `compare()` on typical answers.

    .venv/bin/python benchmarks/shadow.py [--rounds 5 --duration 8 --rate 200 --delay-ms 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

from _procs import SECRET, Procs, free_port, pct, pinned, start_backend, wait_http
from ab import cpu_seconds

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ARMS = ("off-a", "on", "off-b")


def config(work: Path, port: int, admin: int, b1: int, b2: int, shadow: bool) -> Path:
    cfg = work / "killgate.yaml"
    sh = "    shadow: {version: v2, sample: 1.0, max_inflight: 256}\n" if shadow else ""
    cfg.write_text(f"""listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}}}
state: {{backend: local, path: {work}/store.json, snapshot_path: {work}/snap.json}}
log: {{level: warning}}
routes:
  - name: bench
    match: {{path_prefix: /}}
    stable: v1
{sh}    versions:
      - {{name: v1, url: "http://127.0.0.1:{b1}", weight: 100}}
      - {{name: v2, url: "http://127.0.0.1:{b2}", weight: 0}}
""")
    return cfg


def shadow_report(admin: int) -> dict[str, object]:
    from gateway.admin.tokens import mint

    tok = mint(SECRET, "bench", "killgate:read", 600, "killgate", "killgate-admin")
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/v1/routes/bench/shadow",
                                 headers={"authorization": f"Bearer {tok}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return dict(json.loads(r.read()))


def one(arm: str, work: Path, b1: int, b2: int, args: argparse.Namespace) -> dict[str, float]:
    procs = Procs()
    port, admin = free_port(), free_port()
    cfg = config(work, port, admin, b1, b2, arm == "on")
    try:
        gw = procs.start(pinned(0, [sys.executable, "-m", "gateway", "serve", "-c", str(cfg)]),
                         work / f"gateway-{arm}.log")
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        url = f"http://127.0.0.1:{port}/v2/models/m/infer"
        gen = [sys.executable, str(HERE / "openloop.py"), url, "--duration"]
        subprocess.run(pinned(1, [*gen, "1", "--rate", f"{args.rate:g}"]),  # warm-up
                       capture_output=True, check=True)
        i0 = cpu_seconds(gw.pid)
        time.sleep(args.idle)
        idle = (cpu_seconds(gw.pid) - i0) / args.idle  # background work, CPU s per s
        cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
        out = subprocess.run(pinned(1, [*gen, f"{args.duration:g}", "--rate",
                                        f"{args.rate:g}"]),
                             capture_output=True, text=True, check=True).stdout
        cpu = cpu_seconds(gw.pid) - cpu0
        busy = cpu - idle * (time.monotonic() - t0)
        res = json.loads(out)
        lat = [t * 1000 for s, t in res["results"] if s == 200]
        bad = sum(1 for s, _ in res["results"] if s != 200)
        row = {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": len(lat), "errors": bad,
               "cpu_us": cpu / max(len(lat), 1) * 1e6, "late_ms": res["late_ms"],
               "busy_us": busy / max(len(lat), 1) * 1e6}
        if arm == "on":
            deadline = time.monotonic() + 10
            rep = shadow_report(admin)
            while rep["compared"] < len(lat) - rep["dropped"] and time.monotonic() < deadline:
                time.sleep(0.2)
                rep = shadow_report(admin)
            row.update(compared=rep["compared"], agreement=rep["agreement"] or 0.0,
                       dropped=rep["dropped"])
        return row
    finally:
        procs.stop()


def in_process() -> list[tuple[str, float]]:
    """µs per compare() call on typical answers (best of 5)."""
    from gateway.config_shadow import CompareConfig
    from gateway.domain.compare import compare
    from gateway.domain.comparison import Answer

    def v2(noise: float) -> Answer:
        data = [i / 1000 + noise for i in range(1000)]
        return Answer(200, json.dumps({"outputs": [{"name": "probs", "shape": [1, 1000],
                                                    "datatype": "FP32", "data": data}]}).encode())

    def chat(text: str) -> Answer:
        return Answer(200, json.dumps({"id": str(len(text)), "choices": [{
            "index": 0, "message": {"content": text}, "finish_reason": "stop"}]}).encode())

    same = Answer(200, b'{"ok":true,"model_version":"v1"}')
    cases = [
        ("identical bodies (any kind)", CompareConfig.model_validate({"json": {}}), same, same),
        ("v2_tensors, 1000 FP32, 1e-7 noise", CompareConfig.model_validate({"v2_tensors": {}}),
         v2(0.0), v2(1e-7)),
        ("v2_tensors argmax, 1000 FP32", CompareConfig.model_validate(
            {"v2_tensors": {"argmax": True}}), v2(0.0), v2(1e-7)),
        ("openai_chat, 2 KB text, case differs", CompareConfig.model_validate(
            {"openai_chat": {}}), chat("Paris " * 340), chat("PARIS " * 340)),
        ("json, 200 keys, ids ignored", CompareConfig.model_validate(
            {"json": {"ignore": ["id"]}}),
         Answer(200, json.dumps({"id": 1, **{f"k{i}": i for i in range(200)}}).encode()),
         Answer(200, json.dumps({"id": 2, **{f"k{i}": i for i in range(200)}}).encode())),
    ]
    out = []
    for name, cfg, a, b in cases:
        n = 200
        best = min(timeit.repeat(lambda cfg=cfg, a=a, b=b: compare(cfg, b"", a, b),  # type: ignore[misc]
                                 number=n, repeat=5))
        out.append((name, best / n * 1e6))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    ap.add_argument("--idle", type=float, default=2.0,
                    help="seconds of idle CPU measured before each run (subtracted: busy)")
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {a: [] for a in ARMS}
    with tempfile.TemporaryDirectory(prefix="kg-shadow-") as tmp:
        work = Path(tmp)
        procs = Procs()
        try:
            b1 = start_backend(procs, work / "b1.log", args.delay_ms)
            b2 = start_backend(procs, work / "b2.log", args.delay_ms)
            for r in range(args.rounds):
                order = ARMS[r % 3:] + ARMS[:r % 3]
                for arm in order:
                    row = one(arm, work, b1, b2, args)
                    rows[arm].append(row)
                    print(f"round {r + 1} {arm:5s} p50 {row['p50']:.2f} ms  p99 "
                          f"{row['p99']:.2f} ms  CPU {row['cpu_us']:.0f} µs/req (busy "
                          f"{row['busy_us']:.0f})  n "
                          f"{row['n']:.0f} errors {row['errors']:.0f}"
                          + (f"  compared {row['compared']:.0f} agreement "
                             f"{row['agreement']:.3f} dropped {row['dropped']:.0f}"
                             if arm == "on" else ""), file=sys.stderr, flush=True)
        finally:
            procs.stop()
    print(f"\nrate {args.rate:g}/s for {args.duration:g} s, backend delay {args.delay_ms:g} "
          f"ms, {args.rounds} rounds\n")
    print("| arm | p50 ms | p99 ms | CPU µs/req | busy CPU µs/req (minus idle) |")
    print("|---|---|---|---|---|")
    for arm in ARMS:
        med = {k: statistics.median(r[k] for r in rows[arm])
               for k in ("p50", "p99", "cpu_us", "busy_us")}
        print(f"| {arm} | {med['p50']:.2f} | {med['p99']:.2f} | {med['cpu_us']:.0f} | "
              f"{med['busy_us']:.0f} |")
    print("\n| per round | A/A: off-b - off-a | shadow: on - mean(off) |")
    print("|---|---|---|")
    verdict = []
    for k in ("p50", "p99", "busy_us"):
        aa = [b[k] - a[k] for a, b in zip(rows["off-a"], rows["off-b"], strict=True)]
        sh = [o[k] - (a[k] + b[k]) / 2 for o, a, b in zip(rows["on"], rows["off-a"],
                                                          rows["off-b"], strict=True)]
        print(f"| {k} | " + " / ".join(f"{x:+.2f}" for x in aa) + " | "
              + " / ".join(f"{x:+.2f}" for x in sh) + " |")
        if k != "busy_us":
            noise = max(abs(x) for x in aa)
            med = statistics.median(sh)
            verdict.append(f"{k}: shadow {med:+.2f} ms (median) vs A/A noise ±{noise:.2f} ms"
                           f" → {'within' if abs(med) <= noise else 'OUTSIDE'}")
    for k, what in (("cpu_us", "CPU"), ("busy_us", "busy CPU (minus idle)")):
        off = statistics.median([r[k] for r in rows["off-a"] + rows["off-b"]])
        on = statistics.median([r[k] for r in rows["on"]])
        verdict.append(f"{what} per primary request: {on:.0f} µs with mirroring, {off:.0f} "
                       f"µs without (+{on - off:.0f} µs, {on / off:.2f}x)")
    print("\n" + "\n".join(verdict))
    print("\n| in process: compare() | µs per call |\n|---|---|")
    for name, us in in_process():
        print(f"| {name} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
