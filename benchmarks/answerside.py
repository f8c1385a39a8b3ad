"""The answer side of the fast path alone, counted in instructions: a pooled backend
connection (`Exchange`) taken from its pool, driven (`begin_drive`), fed the benchmarks'
answer in one read and finished (its body taken, the connection pooled again), as
`Flight._fast` and `Finish.write_complete` do. No client side, no routing, no timers: the
figure a change to exchange.py, answerparsing.py, driving.py or upstream.py's pool moves.

    .venv/bin/python benchmarks/answerside.py            # instructions an answer (callgrind)
    .venv/bin/python benchmarks/answerside.py --loop N   # (one run of N answers, natively)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.dataplane.clock import Clock
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.upstream import Upstreams

ANSWER_BODY = b'{"ok":true,"model_version":"v1"}'
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
          b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n" % len(ANSWER_BODY)) + ANSWER_BODY


class _Transport(asyncio.Transport):
    def write(self, data: Any) -> None: ...

    def is_closing(self) -> bool:
        return False


class _Flight:
    """The exchange's sink, as `Flight.upstream` is on the fast path."""

    body = b""

    def upstream(self, ex: Exchange) -> None:
        if ex.complete:
            self.body = ex.finish()


async def _run(n: int) -> None:
    loop = asyncio.get_running_loop()
    clock = Clock()
    upstreams = Upstreams(256, 1024, clock)
    pool = upstreams.pool(("http", "127.0.0.1", 9))
    ex = Exchange(pool)
    ex.connection_made(_Transport())
    ex.keep_alive = ex.complete = True  # (as after a kept-alive answer)
    ex.pooled_at = loop.time()
    pool.open = 1
    pool.idle.append(ex)
    sink = _Flight()

    def one() -> None:
        clock.now = loop.time()
        e = pool.take_idle()
        assert e is not None
        e.begin_drive(sink, b"x", 1e18, 1e9, False)
        e.data_received(ANSWER)

    for _ in range(1000):
        one()
    assert sink.body == ANSWER_BODY
    for _ in range(n):
        one()


def _instructions(n: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-P", __file__, "--loop", str(n)],
        env=dict(os.environ, PYTHONHASHSEED="0"), capture_output=True, text=True,
        check=True).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind: {out[-500:]}")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--loop", type=int, default=None, help="run N answers natively, no count")
    args = ap.parse_args()
    if args.loop is not None:
        asyncio.run(_run(args.loop))
        return
    print(f"answer side, instructions an answer: "
          f"{(_instructions(11_000) - _instructions(1_000)) // 10_000:,}")


if __name__ == "__main__":
    main()
