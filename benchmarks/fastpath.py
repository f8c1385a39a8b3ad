"""The data plane's own Python cost per request on its fast path, in process, no sockets.

A real `HttpProtocol` and `Proxy` (one route, one version, the benchmarks' KServe V2 POST)
with fake transports: each round feeds the client's request bytes to the connection (the
request goes out on an idle pooled backend connection from the parser callback) and the
backend's answer bytes to that connection (the answer is written to the client in one
write from the upstream callback). What is measured is the process CPU time of our code,
llhttp and the callbacks: no syscalls, no event loop wake-ups, no other process. Those are
what `harness.py` adds; this figure is the part a code change moves, and it is steadier on
a shared machine than any wrk run. A calibration loop (plain dict and list work) runs in the
same process, and the ratio of the two is given too: compare ratios across machines.

    .venv/bin/python benchmarks/fastpath.py [--requests 50000] [--rounds 5] [--profile]
        [--telemetry] [--callgrind] [--client bench|sdk|split|bodysplit]

`--telemetry` wires what `killgate serve` tells of each request by default: the request
series (`RequestStats`) as the recorder, and outlier detection and the console's live
traffic counts as observers (canary analysis, off for this route, is left out).
`--client` sends another request than the benchmarks' 3-field head and body in one read: a
realistic client's 8 fields (`sdk`), the head split across two reads (`split`), the body in a
read of its own (`bodysplit`), `sdk`'s with `Connection: close` on a connection of its own
each (`close`). `--callgrind` counts instructions instead of timing (needs
valgrind; a few minutes): the figure a loaded machine does not move.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.configfile import load_config
from gateway.control.table import TableHolder
from gateway.dataplane.clock import Clock
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.inflight import Inflight
from gateway.dataplane.listener import Limits, Listener
from gateway.dataplane.protocol import HttpProtocol
from gateway.dataplane.proxy import Proxy
from gateway.dataplane.upstream import Upstreams
from gateway.telemetry.metrics import Metrics

BODY = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.1,2.8,4.7,1.2]}]}'
REQUEST = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: %d\r\n"
           b"Content-Type: application/json\r\n\r\n" % len(BODY)) + BODY
#: a realistic client's head (8 fields: httpx's, as the OpenAI SDK sends it), for `--client sdk`
SDK_REQUEST = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
               b"Accept: application/json\r\nAccept-Encoding: gzip, deflate\r\n"
               b"Connection: keep-alive\r\nUser-Agent: OpenAI/Python 1.40.0\r\n"
               b"Authorization: Bearer sk-proj-4f2b9c1d7e8a6b5c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
               ) + BODY
#: how `--client` sends its request: the reads the connection gets
CLIENTS = {
    "bench": [REQUEST],  # fastpath's own: 3 fields, head and body in one read
    "sdk": [SDK_REQUEST],  # 8 fields, one read
    "split": [REQUEST[:40], REQUEST[40:]],  # the head split across two reads
    "bodysplit": [REQUEST[:-len(BODY)], BODY],  # the head in one read, the body in the next
    # `sdk`'s head with `Connection: close`, each request on a connection of its own (its
    # accept and close, without the socket's, counted too)
    "close": [SDK_REQUEST.replace(b"Connection: keep-alive", b"Connection: close")],
}
ANSWER_BODY = b'{"ok":true,"model_version":"v1"}'
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
          b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n" % len(ANSWER_BODY)) + ANSWER_BODY


class Sink(asyncio.Transport):
    """A transport that keeps the last write."""

    def __init__(self) -> None:
        super().__init__()
        self.last = b""

    def write(self, data: Any) -> None:
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:  # (all written: `--client close` closes)
        return 0

    def close(self) -> None: ...

    def abort(self) -> None: ...


def calibration() -> list[tuple[int, bytes]]:
    d = {}
    for i in range(50):
        d[i] = (i, b"x%d" % i)
    return [v for v in d.values() if v[0] & 1]


async def measure(args: argparse.Namespace, work: Path) -> None:
    cfg = work / "killgate.yaml"
    cfg.write_text(f"""listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0}}
state: {{backend: local, path: {work}/store.json, snapshot_path: {work}/snap.json}}
routes:
  - name: bench
    match: {{path_prefix: /}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:9", weight: 100}}
""")
    loop = asyncio.get_running_loop()
    clock = Clock()
    upstreams = Upstreams(256, 1024, clock)
    holder = TableHolder(load_config(cfg))
    metrics = Metrics()
    extra: dict[str, Any] = {}
    if args.telemetry:
        from gateway.control.probes import HealthMonitor
        from gateway.control.traffic import LiveTraffic
        from gateway.telemetry.requests import RequestStats
        from gateway.wiring.dataplane import Outcomes

        health = HealthMonitor(holder, metrics)
        await health.configure(holder.loaded.config)  # (no probes: outlier detection only)
        extra = {"recorder": RequestStats(holder.loaded.config.telemetry.buckets),
                 "observer": Outcomes(health, LiveTraffic(None, "bench"))}  # type: ignore[arg-type]
    proxy = Proxy(holder, upstreams, Inflight(), metrics, 10 << 20, 1 << 20, **extra)
    listener = Listener(proxy, Limits(), 100, clock=clock)
    pool = upstreams.pool(("http", "127.0.0.1", 9))
    backend = Exchange(pool)
    backend.connection_made(Sink())
    backend.keep_alive = True  # (as after a kept-alive answer: the pool hands it out)
    backend.pooled_at = loop.time()  # (pooled now: one pooled at 0 is past its idle timeout)
    pool.open = 1
    pool.idle.append(backend)
    client = Sink()
    conn = HttpProtocol(listener, loop)
    conn.connection_made(client)

    reads = CLIENTS[args.client]

    def one() -> None:
        for data in reads:
            conn.data_received(data)
        backend.data_received(ANSWER)

    if args.client == "close":
        conn.connection_lost(None)

        def one() -> None:
            c = HttpProtocol(listener, loop)
            c.connection_made(client)
            for data in reads:
                c.data_received(data)
            backend.data_received(ANSWER)
            c.connection_lost(None)

    for _ in range(2000):
        one()
    assert client.last.startswith(b"HTTP/1.1 200 OK") and client.last.endswith(ANSWER_BODY), \
        client.last
    if args.loop is not None:  # (--callgrind's run: the loop alone, then exit)
        for _ in range(args.loop):
            one()
        await upstreams.close()
        return
    per_request, ratios = [], []
    n = args.requests
    for _ in range(args.rounds):
        t0 = time.process_time()
        for _ in range(n):
            one()
        us = (time.process_time() - t0) / n * 1e6
        t1 = time.process_time()
        for _ in range(n // 5):
            calibration()
        cal = (time.process_time() - t1) / (n // 5) * 1e6
        per_request.append(us)
        ratios.append(us / cal)
        print(f"round: {us:6.2f} µs per request; calibration {cal:5.2f} µs; ratio {us / cal:.2f}",
              file=sys.stderr)
    print(f"fast path, Python CPU per request (median of {args.rounds} x {n}): "
          f"{statistics.median(per_request):.2f} µs; per calibration unit "
          f"{statistics.median(ratios):.2f}")
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20000):
            one()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    await upstreams.close()


def _instructions(loop: int, telemetry: bool, client: str = "bench") -> int:
    """Instructions of one run of this script with `--loop` (callgrind's total)."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--loop", str(loop), "--client", client] + ["--telemetry"] * telemetry,
        # one hash seed: dict and set layouts (and so the count) vary by ~1-2 % with it
        env=dict(os.environ, PYTHONHASHSEED="0"),
        capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind: {out[-500:]}")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="then a cProfile of 20,000 more")
    ap.add_argument("--telemetry", action="store_true",
                    help="with the request series and the default observers (as serve)")
    ap.add_argument("--callgrind", action="store_true",
                    help="instead: instructions per request (valgrind's callgrind: this "
                         "script's loop of 4,000 minus its loop of 1,000, no calibration)")
    ap.add_argument("--client", choices=sorted(CLIENTS), default="bench",
                    help="the request as sent: bench (3 fields, one read), sdk (8 fields), "
                         "split (the head across two reads), bodysplit (the body in a read "
                         "of its own), close (sdk's with Connection: close, a connection "
                         "each)")
    ap.add_argument("--loop", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind:
        n = (_instructions(4000, args.telemetry, args.client)
             - _instructions(1000, args.telemetry, args.client)) // 3000
        print(f"fast path, instructions per request{' (--telemetry)' * args.telemetry}"
              f"{f' (--client {args.client})' * (args.client != 'bench')}: {n:,}")
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
