"""A group's worker writes its slot's file before its start heartbeats its name.

The file (gateway/workerstates.py) was written once the start had finished, after the
heartbeat that published the worker's admin address: a worker killed in between was named
by no file, its replacement found none to name it gone from, and a drill that began with
its name listed asked for it until the budget ran out and failed with it `unasked` (seen in
CI: test_drill_group_answer's SIGKILLed worker). Real `killgate serve --workers 2` whose
start is held by a first health round against a backend that does not answer: the files
are there long before the group serves.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.backends import echo_app
from tests.conftest import free_port, write_config
from tests.drillrig import routes

pytestmark = pytest.mark.timeout(60)

HELD = 8.0  # (seconds the first health round holds each worker's start)


def _silent() -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    app = web.Application()
    app.router.add_get("/slow-ready", ready)
    return app


async def test_the_slot_files_are_written_before_the_start_finishes(
        tmp_path: Path, backends, gateway_procs) -> None:
    run = tmp_path / "run"
    run.mkdir()
    p1, p2 = await backends(echo_app("v1")), await backends(_silent())
    held = routes(p1, p2).replace(
        "  stable: v1\n", f"  stable: v1\n  health: {{path: /slow-ready, interval: 60s, "
                          f"timeout: {HELD:g}s}}\n", 1)
    g = gateway_procs(write_config(tmp_path, held, listen=f"127.0.0.1:{free_port()}",
                                   admin=f"127.0.0.1:{free_port()}"), workers=2,
                      env={"TMPDIR": str(run)})
    began = time.monotonic()
    files: list[Path] = []
    while len(files) < 2:
        assert time.monotonic() - began < HELD * 3, sorted(run.rglob("*"))
        files = sorted(run.glob("*/state-*.json"))
        await asyncio.sleep(0.05)
    written = time.monotonic()
    await asyncio.to_thread(g.wait_ready)
    ready = time.monotonic()
    assert ready - written > HELD / 2, (written - began, ready - began)
    names = {json.loads(f.read_text())["instance"] for f in files}
    assert len(names) == 2 and all("-w" in n for n in names), names
