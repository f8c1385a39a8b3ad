"""The operator console's static files (CONTRACT §5.3): `GET /ui/` on the admin listener.

Owns serving the files shipped under `gateway/admin/ui/` (read once from the package when
the listener is built, then served from memory by exact name: no request path ever
reaches the filesystem) and the headers every console answer carries: a strict
Content-Security-Policy (scripts, styles, images and API calls from this origin only, no
inline script or style, no framing, Trusted Types required), X-Frame-Options DENY,
nosniff, no referrer. No auth: the files hold no data, and every API call the page makes
carries the user's token. May import aiohttp.web only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

from aiohttp import web

from gateway.admin.expect import expect_handler
from gateway.admin.middleware import ANSWER_HEADERS

__all__ = ["CSP", "UiFiles"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
       "require-trusted-types-for 'script'; trusted-types 'none'")
HEADERS = {
    **ANSWER_HEADERS,  # (X-Frame-Options DENY, nosniff, same-origin resources)
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidate (ETag): an upgrade shows at the next load
}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    ctype: str
    etag: str


def _walk(root: Traversable, prefix: str = "") -> dict[str, _File]:
    out: dict[str, _File] = {}
    for item in root.iterdir():
        name = prefix + item.name
        if item.is_dir():
            out.update(_walk(item, name + "/"))
            continue
        ctype = TYPES.get("." + item.name.rsplit(".", 1)[-1])
        if ctype is None or item.name.startswith("."):
            continue  # only what the page is made of
        body = item.read_bytes()
        out[name] = _File(body, ctype, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return out


class UiFiles:
    def __init__(self) -> None:
        self.files = _walk(resources.files("gateway.admin") / "ui")
        if "index.html" not in self.files:
            raise RuntimeError("the console's files are missing from the package "
                               "(gateway/admin/ui/index.html)")

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/ui", self.redirect, expect_handler=expect_handler)
        router.add_get("/ui/", self.index, expect_handler=expect_handler)
        router.add_get("/ui/{name:.+}", self.asset, expect_handler=expect_handler)

    async def redirect(self, request: web.Request) -> web.Response:
        # relative: behind a proxy that publishes the listener under a prefix (/kg/ui),
        # the browser resolves it to that prefix's /kg/ui/, not the site root's /ui/
        return web.Response(status=308, headers={**HEADERS, "Location": "ui/"})

    async def index(self, request: web.Request) -> web.Response:
        return self._serve(request, self.files["index.html"])

    async def asset(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["name"])
        if f is None:
            return web.json_response({"error": {"type": "not_found", "message":
                                                "no such console file"}},
                                     status=404, headers=HEADERS)
        return self._serve(request, f)

    @staticmethod
    def _serve(request: web.Request, f: _File) -> web.Response:
        headers = {**HEADERS, "ETag": f.etag}
        if request.headers.get("If-None-Match") == f.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=f.body, headers={**headers, "Content-Type": f.ctype})
