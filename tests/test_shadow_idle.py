"""Shadow copies and `server.backend_idle_timeout`: the copies' own pools close a connection
idle past it, as the data plane's do (dataplane/shadow.py, dataplane/upstream.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import running_gateway, wait_until, write_config
from tests.test_proxy import _ClosesIdle
from tests.test_shadow import INFER, route, settled

pytestmark = pytest.mark.timeout(60)


async def test_a_shadow_copy_does_not_reuse_a_connection_idle_past_the_timeout(
        tmp_path: Path, session: ClientSession) -> None:
    """The copies' pools read a clock only their backends' bytes move: between two copies
    far apart it stood still, so a connection idle for minutes looked fresh, was reused
    after the backend had closed it, and the copy failed (`reset`), one comparison lost
    each time traffic was sparse; nor did they read `server.backend_idle_timeout`."""
    primary, shadow = _ClosesIdle(), _ClosesIdle()
    p1, p2 = await primary.start(), await shadow.start()
    try:
        cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}", "http"),
                           extra="server: {backend_idle_timeout: 200ms}\n")
        async with running_gateway(cfg) as g:
            for n in (1, 2, 3):
                async with session.post(g.url + INFER, data=b"{}") as r:
                    await r.read()
                    assert r.status == 200
                last = await settled(session, g.admin, n, "ended")
                assert last["copies"]["failed"] == 0, last
                idle_at = time.monotonic()
                await wait_until(lambda: time.monotonic() - idle_at > 0.4, 5, 0.05)  # noqa: B023
            assert shadow.connections == 3 and shadow.answered == 3
    finally:
        await primary.stop()
        await shadow.stop()
