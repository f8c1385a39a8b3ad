"""A route with one version: a request waiting for its connection when the route or the
version is killed, whose wait then ends in an error, is answered 503 killed (or the
route's fallback), not 503 overloaded, and the error is not counted against the killed
version. (From a fifth hostile review.)"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import hang_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("scope, abort_inflight", [
    ("route", True),    # 503 killed before 86e6eff
    ("version", True),  # 503 killed before 86e6eff
    ("version", False),  # (also before 86e6eff: no check after the error)
])
async def test_queued_request_of_a_killed_single_version_route_answers_killed(
        tmp_path: Path, backends, scope: str, abort_inflight: bool) -> None:
    p1 = await backends(hang_app())
    routes = textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          timeouts: {{connect: 1s, total: 10s}}
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}"}}
        - name: other
          match: {{path_prefix: /other}}
          stable: a
          versions:
            - {{name: a, url: "http://127.0.0.1:{p1}"}}
        """)
    cfg = write_config(tmp_path, routes, extra="server: {max_connections_per_backend: 1}\n")
    async with running_gateway(cfg) as g, ClientSession() as session:
        holder = asyncio.create_task(session.get(g.url + "/other/x"))  # hangs on p1
        await wait_until(lambda: g.gw.inflight.count == 1)
        waiter = asyncio.create_task(session.get(g.url + "/v2/models/iris/infer"))
        await wait_until(lambda: g.gw.inflight.count == 2)  # queued for v1, never sent
        body: dict[str, object] = {"scope": scope, "route": "iris",
                                   "abort_inflight": abort_inflight}
        if scope == "version":
            body["version"] = "v1"
        await kill(session, g.admin, **body)
        resp = await asyncio.wait_for(waiter, 10)
        status, text = resp.status, await resp.text()
        resp.release()
        holder.cancel()
        with contextlib.suppress(BaseException):
            await holder
    assert status == 503 and "killed" in text and "overloaded" not in text, (
        f"queued for v1 (never sent), {scope} kill (abort_inflight={abort_inflight}), then "
        f"its queue wait timed out, no other version: {status} {text[:300]}")
