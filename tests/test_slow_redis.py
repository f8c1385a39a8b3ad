"""RELIABILITY row 21: Redis answering every command 500 ms late.

The gateway reaches Redis through a delay line. The data plane never waits on Redis, so
its latency does not move; the sync loop (with a `command_timeout` above the delay) keeps
working, and a kill still reaches the data plane and answers with its receipt.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, write_config
from tests.faultproxy import Forwarder
from tests.test_killswitch import INFER, kill, status_of


async def _p99(session, url: str, n: int = 300) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url + INFER) as r:
            await r.read()
            assert r.status == 200
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[int(n * 0.99) - 1]


async def test_slow_redis_leaves_the_data_plane_alone(tmp_path: Path, backends, session,
                                                      redis_server: RedisServer) -> None:
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        p = await backends(echo_app("v1"))
        state = (f"state:\n  backend: redis\n  url: redis://127.0.0.1:{fwd.port}/0\n"
                 f"  prefix: kgslow\n  snapshot_path: {tmp_path}/snap.json\n"
                 "  poll_interval: 100ms\n  command_timeout: 2s\n")
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
        async with running_gateway(cfg) as g:
            quiet = await _p99(session, g.url)
            fwd.latency = 0.5
            slow = await _p99(session, g.url)
            # "within noise": generous, since both are sub-millisecond-to-few-ms figures
            assert slow < 3 * quiet + 0.005, (quiet, slow)
            t0 = time.monotonic()
            receipt = await kill(session, g.admin, wait="10s", scope="route", route="iris")
            assert receipt["applied"]["acked"] == receipt["applied"]["instances"], receipt
            assert 0.5 <= time.monotonic() - t0 < 8.0  # slow, as Redis is, but done
            assert (await status_of(session, g.url))[0] == 503
            assert g.gw.sync.connected and g.gw.sync.last_error is None
    finally:
        await fwd.close()
