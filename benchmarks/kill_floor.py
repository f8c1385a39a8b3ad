"""The floor under kill propagation: the same hops as a kill, with none of killgate's work.

Run:  .venv/bin/python benchmarks/kill_floor.py [--trials 200] [--gap 0.02]

Starts its own redis-server and three "instances": Python processes on uvloop, each
subscribed to a channel through `gateway/state/resp.py` (hiredis, the store's own client)
and serving an aiohttp app whose one handler `PUBLISH`es the request body on that channel
and answers 200. Each instance records the wall clock at which every message arrives
(same host, same clock). Two chains are timed, alternately, `--gap` seconds apart:

* `PUBLISH → 3 subscribers`: this process writes `PUBLISH` on a bare socket to redis;
  the figure ends when the last of the three instances has the message.
* `HTTP → handler PUBLISHes → 3 subscribers`: this process sends a bare keep-alive HTTP
  POST to instance 0 (as an operator's kill call reaches one instance), whose handler
  publishes; the figure ends at the last arrival.

`killswitch.py` measures the real thing (token check, the Lua commit, the state document,
the table swap) over the same hops; the difference between the two is killgate's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _procs import Procs, free_port, pct

CHANNEL = "killgate-floor"
INSTANCES = 3


async def instance(redis_port: int, http_port: int, out: Path) -> None:
    from aiohttp import web

    from gateway.state import resp

    arrivals: dict[str, float] = {}

    def on_message(_channel: bytes, data: bytes) -> None:
        arrivals[data.decode()] = time.time()

    ep = resp.parse_endpoint(f"redis://127.0.0.1:{redis_port}")
    sub = await resp.connect(ep, 2.0, "floor-sub", on_message)
    await sub.call("SUBSCRIBE", CHANNEL, timeout=2.0)
    cmd = await resp.connect(ep, 2.0, "floor-cmd")

    async def publish(request: web.Request) -> web.Response:
        await cmd.call("PUBLISH", CHANNEL, await request.read(), timeout=2.0)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/publish", publish)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    out.with_suffix(".ready").write_text("1")
    await stop.wait()
    out.write_text(json.dumps(arrivals))  # noqa: ASYNC240 - after the measurement
    await runner.cleanup()
    await sub.aclose()
    await cmd.aclose()


async def drive(redis_port: int, http_port: int, trials: int, gap: float) -> dict[str, float]:
    """Alternate the two chains; returns message id -> wall clock when it was sent."""
    rr, rw = await asyncio.open_connection("127.0.0.1", redis_port)
    hr, hw = await asyncio.open_connection("127.0.0.1", http_port)
    sent: dict[str, float] = {}
    try:
        for i in range(trials * 2):
            await asyncio.sleep(gap)
            msg = f"{'ph'[i % 2]}{i}".encode()
            if i % 2 == 0:
                req = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                    len(CHANNEL), CHANNEL.encode(), len(msg), msg)
                sent[msg.decode()] = time.time()
                rw.write(req)
                reply = await rr.readline()
                assert reply.startswith(b":"), reply
            else:
                req = (b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(msg), msg))
                sent[msg.decode()] = time.time()
                hw.write(req)
                head = await hr.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await hr.readexactly(length)
    finally:
        rw.close()
        hw.close()
    return sent


CHAINS = {"p": "PUBLISH → 3 subscribers", "h": "HTTP → handler PUBLISHes → 3 subscribers"}


def measure_floor(redis_port: int, tmp: Path, trials: int, gap: float) -> dict[str, list[float]]:
    """Start the instances on an existing redis, time both chains, stop them.

    Returns chain label -> lags in ms (send to the last instance's arrival)."""
    import uvloop

    procs = Procs()
    http_ports = [free_port() for _ in range(INSTANCES)]
    outs = [tmp / f"floor-instance{i}.json" for i in range(INSTANCES)]
    try:
        for port, out in zip(http_ports, outs, strict=True):
            procs.start([sys.executable, __file__, "--instance", str(redis_port), str(port),
                         str(out)], tmp / f"{out.stem}.log")
        deadline = time.monotonic() + 15
        while not all(o.with_suffix(".ready").exists() for o in outs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.procs):
                raise SystemExit(f"floor instances did not start; logs in {tmp}")
            time.sleep(0.05)
        sent = uvloop.run(drive(redis_port, http_ports[0], trials, gap))
    finally:
        procs.stop()  # SIGTERM: each instance writes what arrived, then exits
    arrivals = [json.loads(o.read_text()) for o in outs]
    return {label: [(max(a[m] for a in arrivals) - t) * 1000 for m, t in sent.items()
                    if m.startswith(key) and all(m in a for a in arrivals)]
            for key, label in CHAINS.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200, help="messages per chain")
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between messages")
    ap.add_argument("--instance", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.instance:
        import uvloop

        uvloop.run(instance(int(args.instance[0]), int(args.instance[1]), Path(args.instance[2])))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="kg-killfloor-"))
    redis_port = free_port()
    procs = Procs()
    try:
        procs.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no"], tmp / "redis.log")
        time.sleep(0.3)  # redis-server listens within milliseconds
        lags = measure_floor(redis_port, tmp, args.trials, args.gap)
    finally:
        procs.stop()
    shutil.rmtree(tmp, ignore_errors=True)  # kept (logs and all) when the run failed
    print(f"# Kill-propagation floor ({args.trials} messages per chain, {args.gap * 1000:g} ms "
          f"apart, {INSTANCES} instances, {os.cpu_count()} CPUs)\n")
    print("| chain | n | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for label, xs in lags.items():
        print(f"| {label} | {len(xs)} | {pct(xs, 0.5):.2f} | {pct(xs, 0.9):.2f} "
              f"| {pct(xs, 0.99):.2f} | {max(xs):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
