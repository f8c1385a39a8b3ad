"""A request waiting for a connection to a version killed meanwhile (with or without
`abort_inflight`) whose wait then ends in an error (the queue's timeout) fails over: nothing
went out, so the table decides, not the flight's abort mark. (From a fourth hostile
review: it got 503 killed.)"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app, hang_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("abort_inflight", [False, True])
async def test_queued_request_of_a_killed_version_fails_over_after_queue_timeout(
        tmp_path: Path, backends, abort_inflight: bool) -> None:
    r2 = Recorder()
    p1, p2 = await backends(hang_app()), await backends(echo_app("v2", r2))
    extra = "timeouts: {connect: 1s, total: 10s}\n"
    # another route on v1's backend (same origin, so the same pool of one connection)
    other = textwrap.dedent(f"""\
        - name: other
          match: {{path_prefix: /other}}
          stable: a
          versions:
            - {{name: a, url: "http://127.0.0.1:{p1}"}}
        """)
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0, extra=extra) + other,
                       extra="server: {max_connections_per_backend: 1}\n")
    async with running_gateway(cfg) as g, ClientSession() as session:
        holder = asyncio.create_task(session.get(g.url + "/other/x"))  # hangs on p1
        await wait_until(lambda: g.gw.inflight.count == 1)
        waiter = asyncio.create_task(session.get(g.url + "/v2/models/iris/infer"))
        await wait_until(lambda: g.gw.inflight.count == 2)  # queued for v1, never sent
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
        f"queued for v1 (never sent) when v1 was killed (abort_inflight={abort_inflight}), "
        f"then its queue wait timed out: {status} from {version}: {body[:200]}")
