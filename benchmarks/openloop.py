"""An open-loop load generator: requests leave on a fixed schedule, whatever the answers do.

    python benchmarks/openloop.py URL --rate R --duration S [--timeout T]

A closed-loop client (wrk) slows down when the server does, so it never offers more than
the server takes; overload has to be offered open-loop. Request i leaves at t0 + i / R over
a pool without a connection limit (a slow answer never holds the next request back), and
its outcome is recorded: the status (or -1 for a connection error or `--timeout`) and its
latency. One JSON object is printed on stdout when done:
`{"sent": n, "late_ms": max schedule slip, "elapsed_s": until the last answer,
"results": [[status, latency_s], ...]}`.
Runs on uvloop, one process: run it pinned to a core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import uvloop

BODY = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.1,2.8,4.7,1.2]}]}'


async def run(url: str, rate: float, duration: float, timeout: float) -> dict[str, object]:
    results: list[tuple[int, float]] = []
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    late = 0.0
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async def one(due: float) -> None:
            t = due  # latency from when it was due to leave: the generator's own lag counts
            try:
                async with s.post(url, data=BODY,
                                  headers={"content-type": "application/json"}) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                status = -1
            results.append((status, time.perf_counter() - t))

        tasks: set[asyncio.Task[None]] = set()
        n = int(rate * duration)
        t0 = time.perf_counter()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            task = asyncio.create_task(one(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    return {"sent": n, "late_ms": round(late * 1000, 1), "elapsed_s": round(elapsed, 3),
            "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--duration", type=float, required=True, help="seconds of sending")
    ap.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    args = ap.parse_args()
    out = uvloop.run(run(args.url, args.rate, args.duration, args.timeout))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
