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


async def test_drop_headers_keeps_the_clients_credentials_from_the_shadow(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A copy is the client's request: its Authorization, Cookie and API keys went to the
    shadow as they go to the primary, and nothing could keep them from a shadow run by
    another team or provider (found by hostile shadow review, sixth pass: headers
    forwarded to the shadow). `shadow.drop_headers` names the fields the copy to the shadow
    leaves out (any case); the primary, and the noise floor's second request to it, still
    get them."""
    primary, shadow = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", primary)), await backends(echo_app("v2", shadow))
    sh = ("{version: v2, sample: 1.0, noise: {sample: 1.0}, "
          "drop_headers: [Authorization, cookie, X-API-Key]}")
    cfg = write_config(tmp_path, route(p1, p2, sh, "http", "/api"))
    secret = {"authorization": "Bearer sk-live-1", "Cookie": "session=s3cret",
              "x-api-key": "k-2", "x-tenant": "acme"}
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/api/items", headers=secret) as r:
            assert r.status == 200
            await r.read()
        await wait_until(lambda: shadow.requests and len(primary.requests) == 2, 10,
                         what="the copy and the noise copy")
    names = {k for k, _ in shadow.requests[0]["headers"]}
    assert not names & {"authorization", "cookie", "x-api-key"}, names
    assert ("x-tenant", "acme") in shadow.requests[0]["headers"]
    assert ("x-killgate-shadow", "1") in shadow.requests[0]["headers"]
    for seen in primary.requests:  # (the client's request and the noise copy)
        assert ("authorization", "Bearer sk-live-1") in seen["headers"]


async def test_drop_headers_refuses_a_name_no_field_can_have(tmp_path: Path) -> None:
    from gateway.configfile import load_config
    from gateway.errors import ConfigError

    cfg = write_config(tmp_path, route(1, 2, "{version: v2, drop_headers: ['bad name']}",
                                       "http", "/api"))
    with pytest.raises(ConfigError, match="drop_headers"):
        load_config(cfg)
