"""A Location naming the version's own URL, base path included (a version url with a
path: the gateway sends base + path), maps back to the client's path, as nginx's
`proxy_redirect default` replaces the whole proxy_pass URL. (From a third hostile review:
the base path stayed in it, a path the gateway does not route.)
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.conftest import running_gateway, write_config

pytestmark = pytest.mark.timeout(30)


def slash_redirect_app() -> web.Application:
    async def handler(req: web.Request) -> web.StreamResponse:
        if not req.path.endswith("/"):  # (Starlette's redirect_slashes, from request.url)
            raise web.HTTPTemporaryRedirect(f"http://{req.host}{req.path}/")
        return web.json_response({"ok": True, "path": req.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_a_redirect_from_a_version_with_a_base_path_is_followable(
        tmp_path: Path, backends) -> None:
    port = await backends(slash_redirect_app())
    cfg = write_config(tmp_path, textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}/base", weight: 100}}
        """))
    async with running_gateway(cfg) as g, ClientSession() as session:
        resp = await session.get(g.url + "/v2/models/iris", allow_redirects=False)
        location = resp.headers.get("location", "")
        resp.release()
        assert resp.status == 307
        # the client follows the relative Location to the gateway
        async with session.get(g.url + location, allow_redirects=False) as followed:
            followed_status = followed.status
            body = await followed.text()
    assert followed_status == 200, (
        f"Location: {location} (the backend's base path left in) -> "
        f"{followed_status} {body[:200]}")
