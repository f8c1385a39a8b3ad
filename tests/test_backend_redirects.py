"""The backend's address does not reach data-plane clients through an absolute URL the
backend built from the Host the gateway sends it (its own address): a trailing-slash
redirect (Starlette's `redirect_slashes`, on by default in FastAPI, so in most
OpenAI-compatible servers) is made relative, as nginx's `proxy_redirect default` does.
(From a second hostile review.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.conftest import running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(30)


def slash_redirect_app() -> web.Application:
    async def handler(req: web.Request) -> web.StreamResponse:
        if not req.path.endswith("/"):  # (Starlette's redirect_slashes, from request.url)
            raise web.HTTPTemporaryRedirect(f"http://{req.host}{req.path}/")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_a_backend_redirect_does_not_name_the_backend_address(
        tmp_path: Path, backends) -> None:
    port = await backends(slash_redirect_app())
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    async with running_gateway(cfg) as g, ClientSession() as session:
        resp = await session.get(g.url + "/v2/models/iris", allow_redirects=False,
                                 headers={"Host": "models.example.com"})
        location = resp.headers.get("location", "")
        status = resp.status
        resp.release()
    assert status == 307
    assert location == "/v2/models/iris/", (
        f"the client was sent to the backend's own address: Location: {location}")
