"""Floors: what aiohttp's server costs before any proxying, beside killgate and nginx, in one run.

Run:  .venv/bin/python benchmarks/floors.py [--duration 8]

Issue 2's goals compare killgate with nginx and with the backend direct. This benchmark puts
three reference servers beside them, loaded the same way by wrk with the same placement as
`harness.py` (1 worker: server on CPU 0, wrk + backend on CPU 1; 2 workers: unpinned):

* `aiohttp alone`: aiohttp's low-level server answering a fixed body, no backend hop. Any
  proxy built on aiohttp's server does at least this much per request, so its figures bound
  killgate's: its throughput from above, its added latency from below.
* `aiohttp parser alone`: aiohttp's C request parser in a Protocol of our own, without the
  server's per-request objects: what a data plane kept on aiohttp's parser could start from.
* `httptools alone`: the same fixed answer from a raw asyncio Protocol + httptools.
* `minimal proxy`: a raw Protocol + httptools both ways passing bytes through to a kept-alive
  backend connection: the least a Python proxy on uvloop costs (issue 13's floor).
* `naive proxy`: aiohttp's server + `aiohttp.ClientSession`, the issue's reference point.

Every side is started, measured after a warm-up, and stopped before the next; the servers
are in `benchmarks/floor_servers.py`. Prints a Markdown table and the bounds it implies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import (
    DIRECT,
    HOST,
    NO_PIN,
    PIN_1W,
    Pinning,
    Processes,
    Row,
    Server,
    Settings,
    free_port,
    http_get,
    log,
    markdown,
    measure,
    process_tree,
    repin,
    run_wrk,
    start_backend,
    start_killgate,
    start_nginx,
    wait_until,
    which,
    workspace,
)

FLOOR_SERVERS = Path(__file__).resolve().parent / "floor_servers.py"
AIOHTTP, PARSER, HTTPTOOLS, MINPROXY, NAIVE = (
    "aiohttp alone", "aiohttp parser alone", "httptools alone", "minimal proxy", "naive proxy")
KINDS = {AIOHTTP: "aiohttp", PARSER: "parser", HTTPTOOLS: "httptools", MINPROXY: "minproxy",
         NAIVE: "naive"}


@dataclass(frozen=True)
class Scenario:
    delay_ms: int
    workers: int
    connections: tuple[int, ...]
    sides: tuple[str, ...]


SCENARIOS = (
    Scenario(0, 1, (1, 64), (DIRECT, AIOHTTP, PARSER, HTTPTOOLS, MINPROXY, NAIVE, "killgate",
                             "nginx")),
    Scenario(0, 2, (64,), (AIOHTTP, PARSER, HTTPTOOLS, MINPROXY, NAIVE, "killgate", "nginx")),
    Scenario(5, 1, (64,), (DIRECT, MINPROXY, NAIVE, "killgate", "nginx")),
)


def start_floor(procs: Processes, side: str, backend: Server, delay_ms: int, workers: int,
                cpus: frozenset[int] | None) -> Server:
    port = free_port()
    argv = [sys.executable, str(FLOOR_SERVERS), "--kind", KINDS[side], "--port", str(port),
            "--backend-port", str(backend.port), "--workers", str(workers),
            "--delay-ms", str(delay_ms if side != NAIVE else 0)]
    proc = procs.start(f"{KINDS[side]}-{workers}w", argv, cpus)

    def ready() -> bool:
        status, _ = http_get(f"http://{HOST}:{port}/", timeout=0.5)
        return status == 200 and len(process_tree(proc.pid)) >= workers

    wait_until(side, ready, [proc])
    return Server(f"{side} {workers}w", proc, port, workers, logs=[proc.log_path])


def run(settings: Settings, procs: Processes, nginx: str | None) -> list[Row]:
    rows: list[Row] = []
    for sc in SCENARIOS:
        log(f"backend delay {sc.delay_ms} ms, {sc.workers} worker(s)")
        pin = PIN_1W if sc.workers == 1 else NO_PIN
        backend = start_backend(procs, sc.delay_ms)
        repin(backend.proc.pid, pin.client)
        try:
            for side in sc.sides:
                target = start(settings, procs, side, backend, sc, pin, nginx)
                if target is None:
                    continue
                try:
                    for conns in sc.connections:
                        run_wrk(settings.wrk, settings.script, target.url, conns,
                                settings.warmup_s, pin.client)
                        rows.append(measure(settings, backend, target, pin, sc.delay_ms,
                                            conns, 1))
                finally:
                    if target is not backend:
                        procs.stop(target.proc)
        finally:
            procs.stop(backend.proc)
    return rows


def start(settings: Settings, procs: Processes, side: str, backend: Server, sc: Scenario,
          pin: Pinning, nginx: str | None) -> Server | None:
    if side == DIRECT:
        return backend
    if side == "killgate":
        return start_killgate(procs, settings.tmp, backend.port, sc.workers, pin.proxy)
    if side == "nginx":
        if nginx is None:
            return None
        return start_nginx(procs, settings.tmp, nginx, backend.port, sc.workers, pin.proxy)
    return start_floor(procs, side, backend, sc.delay_ms, sc.workers, pin.proxy)


def table(rows: list[Row]) -> list[list[str]]:
    def find(r: Row, side: str) -> Row | None:
        return next((x for x in rows if (x.delay_ms, x.connections) == (r.delay_ms, r.connections)
                     and x.side == side), None)

    out = [["scenario", "side", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors",
            "req/s vs nginx", "req/s vs direct", "p50 added µs", "noise %"]]
    for r in rows:
        nginx = find(r, f"nginx {r.workers}w") if r.workers else None
        direct = find(r, DIRECT)
        is_direct = r.side == DIRECT
        out.append([
            f"{r.delay_ms} ms, c={r.connections}",
            r.side + ("" if is_direct or r.pinned else " (unpinned)"),
            f"{r.wrk.rps:,.0f}", f"{r.wrk.p50_ms:.3f}", f"{r.wrk.p99_ms:.3f}",
            f"{r.cpu_us_per_req:.1f}" if r.cpu_us_per_req is not None else "-",
            r.wrk.errors_text(),
            f"{r.wrk.rps / nginx.wrk.rps:.2f}" if nginx and nginx is not r else "-",
            f"{r.wrk.rps / direct.wrk.rps:.2f}" if direct and not is_direct else "-",
            f"{(r.wrk.p50_ms - direct.wrk.p50_ms) * 1000:+.0f}"
            if direct and not is_direct else "-",
            f"{r.noise_pct:.0f}",
        ])
    return out


def bounds(rows: list[Row]) -> list[str]:
    """The goals of issue 2 set against what aiohttp's server alone reaches in this run."""
    by = {(r.delay_ms, r.connections, r.side): r for r in rows}

    def added(r: Row, base: Row) -> str:
        return f"{(r.wrk.p50_ms - base.wrk.p50_ms) * 1000:+.0f} µs"

    def ratio(r: Row, base: Row) -> str:
        return f"{r.wrk.rps / base.wrk.rps:.2f}"

    def cpu(r: Row, _base: Row) -> str:
        return f"{r.cpu_us_per_req or 0:.1f} µs"

    checks: list[tuple[str, tuple[int, int, str], list[str], Callable[[Row, Row], str]]] = [
        ("1 connection, p50 added over direct (goal ≤ 150 µs)", (0, 1, DIRECT),
         [f"{AIOHTTP} 1w", f"{PARSER} 1w", "killgate 1w", "nginx 1w"], added),
        ("0 ms backend, c=64, 2 workers, req/s vs nginx (goal ≥ 0.5)", (0, 64, "nginx 2w"),
         [f"{AIOHTTP} 2w", f"{PARSER} 2w", f"{HTTPTOOLS} 2w", f"{MINPROXY} 2w", "killgate 2w",
          f"{NAIVE} 2w"],
         ratio),
        ("5 ms backend, c=64, 1 worker, req/s vs direct (goal ≥ 0.95)", (5, 64, DIRECT),
         [f"{MINPROXY} 1w", "killgate 1w", f"{NAIVE} 1w", "nginx 1w"], ratio),
        ("CPU per request, 0 ms backend, c=64, 1 worker (goal ≤ 70 µs)", (0, 64, DIRECT),
         [f"{AIOHTTP} 1w", f"{PARSER} 1w", f"{HTTPTOOLS} 1w", f"{MINPROXY} 1w", "killgate 1w",
          "nginx 1w"], cpu),
    ]
    lines: list[str] = []
    for label, base_key, sides, show in checks:
        base = by.get(base_key)
        parts = [f"{side} {show(by[(*base_key[:2], side)], base)}" for side in sides
                 if base is not None and (*base_key[:2], side) in by]
        if parts:
            lines.append(f"- {label}: " + ", ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    args = p.parse_args(argv)
    wrk, nginx = which("wrk"), which("nginx")
    if wrk is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 1
    if nginx is None:
        print("note: nginx not on PATH, skipping the nginx rows", file=sys.stderr)
    try:
        with workspace("killgate-floors-") as (tmp, script, procs):
            settings = Settings(args.duration, 2.0, [], 0, wrk, nginx, script, tmp, tmp,
                                max_noise_pct=100.0, retries=0, idle_s=0.0)
            rows = run(settings, procs, nginx)
    except KeyboardInterrupt:
        log("interrupted: every process was stopped")
        return 130
    print(f"# Floors (`benchmarks/floors.py --duration {args.duration:g}`)\n")
    print(markdown(table(rows)))
    print()
    print("\n".join(bounds(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
