"""A stale pooled connection's close on a route with one version: `retry_on: [reset]` is
the route's consent to send a request the backend may have received again (README
"Undelivered requests"), and with one version there is nowhere else to send it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import running_gateway, wait_until, write_config
from tests.test_proxy import INFER, _ClosesIdle

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("retry", [False, True])
async def test_a_one_version_route_that_retries_resets_sends_a_stale_post_fresh(
        tmp_path: Path, session: ClientSession, retry: bool) -> None:
    """README: after such a close "a POST then gets 502 unless the route retries resets
    (`retry_on: [reset]`)". A retry goes to another version: a route with one version
    answered 502 whatever it said (before 9df3f60 it was sent fresh to the same version)."""
    backend = _ClosesIdle()
    port = await backend.start()
    extra = "retry: {retry_on: [reset], attempts: 2}\n" if retry else ""
    route = textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        """) + textwrap.indent(extra, "  ")
    try:
        cfg = write_config(tmp_path, route)
        async with running_gateway(cfg) as g:
            async with session.post(g.url + INFER, data=b"{}") as r:  # pools the connection
                assert r.status == 200
                await r.read()
            await wait_until(lambda: len(g.gw.upstreams.pools[("http", "127.0.0.1", port)]
                                         .idle) == 1, 5)
            async with session.post(g.url + INFER, data=b"{}") as r:
                await r.read()
                assert r.status == (200 if retry else 502), r.status
            assert backend.connections == (2 if retry else 1)
    finally:
        await backend.stop()
