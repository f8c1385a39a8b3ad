"""A worker that cannot start, under `killgate serve --workers N`: a crash loop that stops the
group, however long a worker takes to fail.

A worker imports killgate (about a second on a loaded 2-core machine), syncs the state and
checks the config against it before it serves. A failure there (here: a version whose
artifact changed against the recorded history, refused by every worker and never by the
supervisor, which does not read the state) is a crash at start, every time: the group must
end with a failure, not restart each worker once a second for ever."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import free_port, running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(90)


async def test_workers_that_fail_at_start_end_the_group(tmp_path: Path, backends,
                                                         gateway_procs) -> None:
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0).replace(
        "weight: 100}", 'weight: 100, artifact: "sha256:a1"}')
    cfg = write_config(tmp_path, routes, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    # records v1's artifact in the state's history (a gateway in this process: the same
    # start, without an interpreter's)
    async with running_gateway(cfg) as first:
        assert first.gw.loaded.config.routes[0].versions[0].artifact == "sha256:a1"
    loop = asyncio.get_running_loop()

    cfg.write_text(cfg.read_text().replace("sha256:a1", "sha256:b2"))
    group = gateway_procs(cfg, workers=2)
    try:
        rc = await loop.run_in_executor(None, group.proc.wait, 30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the supervisor restarts workers that cannot start, for ever: "
                             f"{group.output().count('worker_exited')} restarts in 30 s") from None
    assert rc == 1, group.output()
    out = group.output()
    assert "routes[0].versions[0].artifact" in out
    assert out.count("crash loop") >= 1, out
    assert out.count("worker_exited") <= 4, out  # each slot: one restart at most
