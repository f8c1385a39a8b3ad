"""A header routing reads, spelled with `_` for `-` (ninth hostile review): WSGI servers
(CGI's HTTP_X_TENANT: gunicorn before 22, waitress, werkzeug) read `X_Tenant` as
`X-Tenant`, so a route killed for one `x-tenant` must not be reached through another route
by the underscore spelling. Refused, as the framing fields' underscore spellings are."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, write_config
from tests.test_killswitch import auth
from tests.test_proxy_confusion import _raw, tenant_routes


async def test_the_underscore_spelling_of_a_header_routing_reads_is_a_quiet_400(
        tmp_path: Path, backends, session, caplog: pytest.LogCaptureFixture) -> None:
    a, b = Recorder(), Recorder()
    pa, pb = await backends(echo_app("a", a)), await backends(echo_app("b", b))
    cfg = write_config(tmp_path, tenant_routes(pa, pb))
    caplog.set_level(logging.DEBUG)
    async with running_gateway(cfg) as g:
        async with session.post(f"{g.admin}/v1/kill", headers=auth(),
                                json={"scope": "route", "route": "tenant-a", "reason": "t"}) as r:
            assert r.status == 200, await r.text()
        port = g.gw.data_addr[1]
        for extra in (b"X_Tenant: a\r\n", b"x_tenant: a\r\nX-Tenant: b\r\n",
                      b"X-Tenant: b\r\nX_TENANT: a\r\n", b"X_User_Id: 1\r\n"):
            got, data = await _raw(port, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                                   + extra + b"Connection: close\r\n\r\n")
            assert got == 400 and b"send it with '-'" in data, (extra, data)
        assert not a.requests and not b.requests
        # the killed tenant is still answered killed; another tenant still served
        got, _ = await _raw(port, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                            b"X-Tenant: a\r\nConnection: close\r\n\r\n")
        assert got == 503
        got, _ = await _raw(port, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                            b"X-Tenant: b\r\nX_Other: 1\r\nConnection: close\r\n\r\n")
        assert got == 200 and len(b.requests) == 1 and not a.requests
        assert g.gw.metrics.get("killgate_bad_requests_total", ("header_alias",)) == 4
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


async def test_a_header_routing_reads_with_an_underscore_is_not_reached_by_its_dash_spelling(
        tmp_path: Path, backends, session) -> None:
    """The same hole the other way round: a route may match a header named with `_`
    (`x_tenant`, a valid token). A WSGI backend reads `X-Tenant: a` as that field too, so
    with tenant-a killed, `X-Tenant: a` went through the catch-all route to its backend
    (200) where routing saw no `x_tenant`."""
    a, b = Recorder(), Recorder()
    pa, pb = await backends(echo_app("a", a)), await backends(echo_app("b", b))
    cfg = write_config(tmp_path, tenant_routes(pa, pb, header="x_tenant"))
    async with running_gateway(cfg) as g:
        async with session.post(f"{g.admin}/v1/kill", headers=auth(),
                                json={"scope": "route", "route": "tenant-a", "reason": "t"}) as r:
            assert r.status == 200, await r.text()
        port = g.gw.data_addr[1]
        got, data = await _raw(port, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                               b"X-Tenant: a\r\nConnection: close\r\n\r\n")
        assert got == 400 and not b.requests, data
        got, _ = await _raw(port, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                            b"x_tenant: a\r\nConnection: close\r\n\r\n")
        assert got == 503  # the killed route, as it is spelled
        got, _ = await _raw(port, b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                            b"X-Other: a\r\nConnection: close\r\n\r\n")
        assert got == 200 and len(b.requests) == 1 and not a.requests
