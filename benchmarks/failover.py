"""Failover and automatic rollback benchmarks (issue 4).

Run:  .venv/bin/python benchmarks/failover.py [--trials 10] [--rate 200]

Every side is its own process on 127.0.0.1: two model servers (aiohttp, with a control
endpoint that makes them answer 500), `killgate serve` (local state), and a load client
in this process sending requests at a fixed rate. Prints one table:

(a) a backend's death: the stable's process is SIGKILLed under load; time from the kill to
    the first answer served by another version, requests sent after the kill that failed
    (goal: 0), and requests in flight at the kill that failed;
(b) a failing canary: the canary starts answering 500; time until the route is rolled back
    automatically (latched), and how many 500s clients saw meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _procs import Procs, free_port, wait_http  # noqa: E402


def serve_backend(port: int, name: str) -> None:
    """Child process: a model server that answers 500 after POST /control/fail."""
    from aiohttp import web

    state = {"status": 200}

    async def handler(req: web.Request) -> web.Response:
        await req.read()
        return web.json_response({"version": name}, status=state["status"])

    async def control(req: web.Request) -> web.Response:
        state["status"] = 500 if req.match_info["what"] == "fail" else 200
        return web.json_response(state)

    app = web.Application()
    app.router.add_post("/control/{what}", control)
    app.router.add_route("*", "/{t:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def run_load(url: str, rate: float, stop: asyncio.Event,
                   out: list[tuple[float, float, int, str]]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async def one() -> None:
            t0 = time.monotonic()
            try:
                async with s.post(url, data=b'{"x":1}') as r:
                    await r.read()
                    out.append((t0, time.monotonic(), r.status,
                                r.headers.get("x-killgate-version", "")))
            except (aiohttp.ClientError, OSError):
                out.append((t0, time.monotonic(), -1, ""))

        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            t = asyncio.create_task(one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)


def config(tmp: Path, port: int, admin: int, ports: dict[str, int], analysis: bool) -> Path:
    health = ("    health: {path: /ready, interval: 250ms, timeout: 200ms, "
              "unhealthy_threshold: 2, healthy_threshold: 2}\n")
    extra = ("    analysis: {window: 3s, interval: 250ms, min_requests: 20}\n" if analysis
             else health)
    weights = {"v1": 90, "v2": 10} if analysis else {"v1": 100, "v2": 0}
    p = tmp / f"killgate-{port}.yaml"
    p.write_text(f"""
listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}}}
state: {{backend: local, path: {tmp}/store-{port}.json, snapshot_path: {tmp}/snap-{port}.json}}
log: {{level: warning}}
routes:
  - name: m
    match: {{path_prefix: /}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:{ports['v1']}", weight: {weights['v1']}}}
      - {{name: v2, url: "http://127.0.0.1:{ports['v2']}", weight: {weights['v2']}}}
{extra}""")
    return p


async def _run(tmp: Path, rate: float, analysis: bool, act,  # type: ignore[no-untyped-def]
               watch) -> tuple[list[tuple[float, float, int, str]], float, float]:
    """Start two model servers and a gateway, load them, `act` at 1 s, `watch` until done.
    Returns the load's results, when `act` happened and what `watch` returned."""
    procs = Procs()
    ports = {"v1": free_port(), "v2": free_port()}
    try:
        for v, p in ports.items():
            procs.start([sys.executable, __file__, "--serve", str(p), v], tmp / f"{v}.log")
        for p in ports.values():
            wait_http(f"http://127.0.0.1:{p}/ready")
        port, admin = free_port(), free_port()
        procs.start([sys.executable, "-m", "gateway", "serve", "-c",
                     str(config(tmp, port, admin, ports, analysis))], tmp / "gw.log")
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        results: list[tuple[float, float, int, str]] = []
        stop = asyncio.Event()
        load = asyncio.create_task(run_load(f"http://127.0.0.1:{port}/infer", rate, stop,
                                            results))
        await asyncio.sleep(1.0)
        acted = act(procs, ports)
        seen = await watch(tmp, port, acted)
        stop.set()
        await load
    finally:
        procs.stop()
    return results, acted, seen


async def trial_kill(tmp: Path, rate: float) -> dict[str, float]:
    def act(procs: Procs, ports: dict[str, int]) -> float:
        os.killpg(procs.procs[0].pid, signal.SIGKILL)  # the stable's process
        return time.monotonic()

    async def watch(tmp: Path, port: int, acted: float) -> float:
        await asyncio.sleep(1.5)
        return acted

    results, killed, _ = await _run(tmp, rate, False, act, watch)
    after = [r for r in results if r[0] >= killed]
    inflight = [r for r in results if r[0] < killed < r[1]]
    first_other = min((r[1] for r in after if r[2] == 200 and r[3] == "v2"), default=float("nan"))
    return {"failover_ms": (first_other - killed) * 1000,
            "errors_after": float(sum(1 for r in after if r[2] != 200)),
            "inflight_failed": float(sum(1 for r in inflight if r[2] != 200)),
            "requests_after": float(len(after))}


async def trial_canary(tmp: Path, rate: float) -> dict[str, float]:
    def act(procs: Procs, ports: dict[str, int]) -> float:
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{ports['v2']}/control/fail", method="POST"), timeout=2).read()
        return time.monotonic()

    async def watch(tmp: Path, port: int, failing: float) -> float:
        store = tmp / f"store-{port}.json"
        rolled = float("nan")
        while time.monotonic() - failing < 10:
            with contextlib.suppress(OSError):
                if "auto_rollback" in store.read_text():
                    rolled = time.monotonic()
                    break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        return rolled

    results, failing, rolled = await _run(tmp, rate, True, act, watch)
    bad = [r for r in results if r[2] == 500]
    return {"rollback_ms": (rolled - failing) * 1000, "client_500s": float(len(bad)),
            "other_errors": float(sum(1 for r in results if r[2] not in (200, 500)))}


async def main_async(trials: int, rate: float) -> None:
    kills, canaries = [], []
    for i in range(trials):
        print(f"trial {i + 1}/{trials}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="kg-failover-") as d:
            kills.append(await trial_kill(Path(d), rate))
        with tempfile.TemporaryDirectory(prefix="kg-canary-") as d:
            canaries.append(await trial_canary(Path(d), rate))

    def col(rows: list[dict[str, float]], k: str) -> list[float]:
        return [r[k] for r in rows]

    fo = col(kills, "failover_ms")
    rb = col(canaries, "rollback_ms")
    print(f"\nkillgate failover benchmarks — {time.strftime('%Y-%m-%d %H:%M')} — {trials} trials "
          f"at {rate:g} req/s — Python {sys.version.split()[0]} — {os.cpu_count()} CPUs\n")
    rows = [
        ("(a) stable killed: kill → first answer from another version, p50 / max",
         f"{statistics.median(fo):.1f} / {max(fo):.1f} ms"),
        ("(a) requests sent after the kill that failed (all trials)",
         f"{sum(col(kills, 'errors_after')):.0f} of {sum(col(kills, 'requests_after')):.0f}"),
        ("(a) requests in flight at the kill that failed (all trials)",
         f"{sum(col(kills, 'inflight_failed')):.0f}"),
        ("(b) canary answers 500: start → automatic rollback, p50 / max",
         f"{statistics.median(rb):.0f} / {max(rb):.0f} ms"),
        ("(b) 500s clients saw before the rollback, per trial p50 / max",
         f"{statistics.median(col(canaries, 'client_500s')):.0f} / "
         f"{max(col(canaries, 'client_500s')):.0f}"),
        ("(b) any other errors (all trials)", f"{sum(col(canaries, 'other_errors')):.0f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    print(json.dumps({"kills": kills, "canaries": canaries}), file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "NAME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_backend(int(args.serve[0]), args.serve[1])
        return 0
    asyncio.run(main_async(args.trials, args.rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
