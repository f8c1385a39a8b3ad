"""A shadow copy carried `x-forwarded-for: <socket peer>` only: not the client chain the
gateway believes behind trusted proxies (the copy came from the load balancer's address),
and no `x-forwarded-proto` or `x-forwarded-host`. A backend that keys anything on them
(links built from the forwarded host, a limit per client) answered the copy otherwise
than the client's request, and the comparison counted that as the shadow's disagreement.
A copy carries the forwarded fields the client's request carried."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_shadow import route

pytestmark = pytest.mark.timeout(30)
FORWARDED = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")


def fields(rec: Recorder, i: int = -1) -> list[tuple[str, str]]:
    return [(k, v) for k, v in rec.requests[i]["headers"] if k in FORWARDED]


@pytest.mark.parametrize("trusted", [False, True])
async def test_a_copy_carries_the_forwarded_fields_of_the_clients_request(
        tmp_path: Path, backends, session: ClientSession, trusted: bool) -> None:
    primary, shadow = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", primary)), await backends(echo_app("v2", shadow))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}", "http", "/api"))
    if trusted:
        cfg.write_text(cfg.read_text().replace(
            "  auth:\n", "  trusted_proxies: [127.0.0.0/8]\n  auth:\n", 1))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/api/items", headers={
                "host": "api.example.com", "x-forwarded-for": "198.51.100.7"}) as r:
            assert r.status == 200
            await r.read()
        await wait_until(lambda: shadow.requests, 10, what="the copy")
    got = fields(shadow)
    assert got == fields(primary), (got, fields(primary))
    assert ("x-forwarded-host", "api.example.com") in got
    assert dict(got)["x-forwarded-for"] == ("198.51.100.7, 127.0.0.1" if trusted
                                            else "127.0.0.1")
