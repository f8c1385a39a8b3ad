"""`server.backend_idle_timeout` after a wait the data plane's shared clock did not see: a
failover after a connect timeout (a timer, not bytes, ended that wait). (From a hostile
review of the data plane; it failed before its fix.)"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import black_hole
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_proxy import INFER, _ClosesIdle

pytestmark = pytest.mark.timeout(60)


async def test_a_failover_after_a_connect_timeout_does_not_reuse_a_connection_idle_too_long(
        tmp_path: Path, session: ClientSession) -> None:
    """v1 is a host that is gone (its connects time out after 600 ms), v2 a backend that
    closes a connection reused after its own keep-alive ran out. v2's pooled connection was
    idle 600 ms, past backend_idle_timeout (400 ms), when the POST failed over to it; but
    the data plane's clock is read at socket events only, and none came during the connect
    wait: the connection looked as old as the POST's arrival made it (a few ms), was
    reused, met the backend's close, and the POST (not safe to send twice) got 502."""
    backend = _ClosesIdle()
    v2 = await backend.start()
    try:
        with black_hole() as v1:
            route = textwrap.dedent(f"""\
                - name: iris
                  match: {{path_prefix: /v2/models/iris}}
                  stable: v1
                  allow_pin: true
                  timeouts: {{connect: 600ms, total: 10s}}
                  versions:
                    - {{name: v1, url: "http://127.0.0.1:{v1}", weight: 100}}
                    - {{name: v2, url: "http://127.0.0.1:{v2}", weight: 0}}
                """)
            cfg = write_config(tmp_path, route,
                               extra="server: {backend_idle_timeout: 400ms}\n")
            async with running_gateway(cfg) as g:
                async with session.post(g.url + INFER, data=b"{}",
                                        headers={"x-killgate-pin": "v2"}) as r:
                    assert r.status == 200  # v2's connection, pooled now
                    await r.read()
                pool = g.gw.upstreams.pools[("http", "127.0.0.1", v2)]
                await wait_until(lambda: len(pool.idle) == 1, 5)
                async with session.post(g.url + INFER, data=b"{}") as r:
                    body = await r.read()
                    assert (r.status, r.headers.get("x-killgate-version"),
                            r.headers.get("x-killgate-decision")) == (
                        200, "v2", "failover"), body
                assert backend.connections == 2  # a fresh one: the idle one was closed
    finally:
        await backend.stop()
