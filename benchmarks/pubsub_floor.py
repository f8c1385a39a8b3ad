"""The floor under kill propagation: redis-py publish -> subscribe between Python processes.

Run:  .venv/bin/python benchmarks/pubsub_floor.py [--messages 300]

Starts its own redis-server, two subscriber processes (redis.asyncio, hiredis) and a
publisher in this process; every message carries the publisher's wall clock just before
`PUBLISH`, and each subscriber records the delay on arrival (same host, same clock). This is
what any redis-py based propagation pays before doing any work of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


async def subscriber(port: int, n: int, out: str) -> None:
    import redis.asyncio as aioredis

    c = aioredis.Redis(port=port)
    ps = c.pubsub()
    await ps.subscribe("floor")
    with open(out + ".ready", "w") as f:  # noqa: ASYNC230 - before any measurement
        f.write("1")
    lags: list[float] = []
    deadline = time.monotonic() + 30
    while len(lags) < n and time.monotonic() < deadline:
        m = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if m is not None:
            lags.append((time.time() - float(m["data"])) * 1000)
    with open(out, "w") as f:  # noqa: ASYNC230 - after the measurement
        f.write(json.dumps(lags))
    await ps.aclose()
    await c.aclose()


async def publisher(port: int, n: int) -> None:
    import redis.asyncio as aioredis

    c = aioredis.Redis(port=port)
    for _ in range(n):
        await c.publish("floor", repr(time.time()))
        await asyncio.sleep(0.01)
    await c.aclose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--sub", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sub:
        asyncio.run(subscriber(int(args.sub[0]), args.messages, args.sub[1]))
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="kg-pubsub-"))
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    subs = []
    try:
        time.sleep(0.5)
        for name in ("a", "b"):
            subs.append(subprocess.Popen([sys.executable, __file__, "--messages",
                                          str(args.messages), "--sub", str(port),
                                          str(tmp / name)]))
        deadline = time.monotonic() + 10
        while not all((tmp / f"{n}.ready").exists() for n in "ab"):
            if time.monotonic() > deadline:
                raise SystemExit("subscribers did not start")
            time.sleep(0.05)
        asyncio.run(publisher(port, args.messages))
        for p in subs:
            p.wait(15)
    finally:
        for p in subs:
            if p.poll() is None:
                p.kill()
        redis.terminate()
        redis.wait(5)
    print(f"redis-py publish -> subscribe, {args.messages} messages, 2 subscriber processes, "
          f"{os.cpu_count()} CPUs")
    for name in "ab":
        lags = sorted(json.loads((tmp / name).read_text()))
        print(f"  subscriber {name}: p50 {statistics.median(lags):.3f} ms, "
              f"p99 {lags[int(len(lags) * 0.99)]:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
