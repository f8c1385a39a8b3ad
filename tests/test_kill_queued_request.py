"""A request routed to v1 and waiting for one of v1's connections (never sent) when v1 is
killed fails over to v2, with or without `abort_inflight`: it never reached the killed
version (README: a killed version's share moves to the others). (From a third hostile
review: with the default `abort_inflight` it got 503 killed.)
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app, hang_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("abort_inflight", [False, True])
async def test_a_request_queued_for_a_version_killed_meanwhile_fails_over(
        tmp_path: Path, backends, abort_inflight: bool) -> None:
    r2 = Recorder()
    p1, p2 = await backends(hang_app()), await backends(echo_app("v2", r2))
    extra = "timeouts: {connect: 2s, total: 10s}\n"
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0, extra=extra),
                       extra="server: {max_connections_per_backend: 1}\n")
    async with running_gateway(cfg) as g, ClientSession() as session:
        url = g.url + "/v2/models/iris/infer"
        holder = asyncio.create_task(session.get(url))  # takes v1's only connection, hangs
        await wait_until(lambda: g.gw.inflight.count == 1)
        waiter = asyncio.create_task(session.get(url))  # queued for v1, never sent
        await wait_until(lambda: g.gw.inflight.count == 2)
        await kill(session, g.admin, scope="version", route="iris", version="v1",
                   abort_inflight=abort_inflight)
        resp = await asyncio.wait_for(waiter, 10)
        version = resp.headers.get("x-killgate-version")
        status, body = resp.status, await resp.text()
        resp.release()
        holder.cancel()
        with contextlib.suppress(BaseException):
            await holder
    assert (status, version) == (200, "v2"), (
        f"queued for v1 (never sent) when v1 was killed (abort_inflight={abort_inflight}): "
        f"{status} from {version}: {body[:200]}")
