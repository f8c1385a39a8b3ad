"""benchmarks/naive_gateway.py is what benchmarks/killswitch.py says it is: killgate with one
redis GET awaited on every data-plane request (the "naive" side of RESULTS §2's
throughput). It patched `Proxy.__call__`, which the data plane stopped calling when it
moved to a protocol of its own: no request awaited a GET, and the naive figure was
killgate's own. A real process of the script, a real redis-server and backend."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import ROOT, RedisServer, die_with_parent, free_port, wait_until, write_config

pytestmark = pytest.mark.timeout(60)


def _gets(redis: RedisServer) -> int:
    m = re.search(r"cmdstat_get:calls=(\d+)", redis.cmd("INFO", "commandstats"))
    return int(m.group(1)) if m else 0


def _start(cfg: Path, log_path: Path, redis_url: str) -> subprocess.Popen[bytes]:
    """`python benchmarks/naive_gateway.py serve -c cfg`, as killswitch.py starts it."""
    env = {**os.environ, "NAIVE_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks/naive_gateway.py"), "serve", "-c", str(cfg)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
            start_new_session=True, preexec_fn=die_with_parent)


async def test_the_naive_build_awaits_a_get_per_request_and_answers_a_kill(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer) -> None:
    port = await backends(echo_app("v1"))
    data, admin = free_port(), free_port()
    cfg = write_config(tmp_path, f"""\
        - name: bench
          match: {{path_prefix: /}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        """, listen=f"127.0.0.1:{data}", admin=f"127.0.0.1:{admin}")
    proc = _start(cfg, tmp_path / "naive.log", redis_server.url)
    try:
        async def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "naive.log").read_text()
            try:
                async with session.get(f"http://127.0.0.1:{admin}/readyz") as r:
                    return r.status == 200
            except OSError:
                return False

        await wait_until(ready, 30, 0.05, "the naive gateway to be ready")
        before = _gets(redis_server)
        for _ in range(5):
            async with session.get(f"http://127.0.0.1:{data}/x") as r:
                assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
                await r.read()
        assert _gets(redis_server) - before >= 5  # (before the fix: 0)
        redis_server.cmd("SET", "kgbench:naive-kill", "1")
        async with session.get(f"http://127.0.0.1:{data}/x") as r:
            assert r.status == 503
            await r.read()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
