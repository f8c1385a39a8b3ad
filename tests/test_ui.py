"""The console's static files (gateway/admin/ui.py): served from the package by exact name,
with a strict CSP and the other security headers; the page itself has no inline script or
style and loads nothing from elsewhere."""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import ClientSession
from yarl import URL

from gateway.admin.ui import CSP, UiFiles
from tests.backends import echo_app
from tests.conftest import ROOT, running_gateway, two_versions, write_config

UI = ROOT / "gateway" / "admin" / "ui"
SECURITY = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script" and not a.get("src"):
            self.inline.append("<script> without src")
        for k, v in a.items():
            if k == "style" or k.startswith("on"):
                self.inline.append(f"<{tag} {k}=...>")
            if k in ("src", "href") and v and not v.startswith("#"):
                self.refs.append(v)


def test_the_csp_allows_nothing_inline_and_nothing_from_elsewhere() -> None:
    rules = dict(r.strip().split(" ", 1) for r in CSP.split(";"))
    assert rules["default-src"] == "'none'"
    for d in ("script-src", "style-src", "img-src", "connect-src"):
        assert rules[d] == "'self'", d
    assert rules["frame-ancestors"] == "'none'" and rules["form-action"] == "'none'"
    assert "unsafe" not in CSP and "require-trusted-types-for 'script'" in CSP


def test_the_page_has_no_inline_script_or_style_and_every_reference_is_ours() -> None:
    page = Page()
    page.feed((UI / "index.html").read_text())
    assert page.inline == []
    assert sorted(page.refs) == ["console.css", "icon.svg", "icon.svg", "js/main.js",
                                 "js/started.js"]
    for ref in page.refs:
        assert (UI / ref).is_file(), ref


JS = sorted((UI / "js").glob("*.js"))


@pytest.mark.parametrize("path", JS, ids=lambda p: p.name)
def test_scripts_build_text_never_html_and_stay_on_this_origin(path: Path) -> None:
    src = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M)  # the code, not its comments
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                "new Function", "localStorage", "document.cookie", ".style.", "setTimeout(\""):
        assert bad not in src, f"{path.name} uses {bad}"
    urls = set(re.findall(r"https?://[^\s\"'`]+", src)) - {"http://www.w3.org/2000/svg"}
    assert not urls, urls
    for imported in re.findall(r'from "\./([\w.]+)"', src):
        assert (UI / "js" / imported).is_file(), f"{path.name} imports a missing {imported}"


def test_every_console_file_is_package_data() -> None:
    """A non-editable install ships exactly what the page is made of."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["gateway.admin"]
    shipped = {p for g in globs for p in (ROOT / "gateway" / "admin").glob(g)}
    on_disk = {p for p in UI.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk == shipped
    assert set(UiFiles().files) == {str(p.relative_to(UI)) for p in on_disk}


async def test_served_with_security_headers_types_and_etags(tmp_path: Path, backends,
                                                            session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        async with session.get(g.admin + "/ui", allow_redirects=False) as r:
            assert r.status == 308 and r.headers["Location"] == "ui/"  # (relative: behind a path prefix too)
        for path, ctype in (("/ui/", "text/html"), ("/ui/console.css", "text/css"),
                            ("/ui/js/main.js", "text/javascript"), ("/ui/icon.svg", "image/svg+xml")):
            async with session.get(g.admin + path) as r:
                assert r.status == 200, path
                assert r.content_type == ctype, path
                for k, v in SECURITY.items():
                    assert r.headers[k] == v, (path, k)
                etag = r.headers["ETag"]
            async with session.get(g.admin + path, headers={"If-None-Match": etag}) as r:
                assert r.status == 304 and await r.read() == b""
        async with session.head(g.admin + "/ui/") as r:
            assert r.status == 200
        async with session.get(g.admin + "/ui/") as r:
            assert '<script type="module" src="js/main.js">' in await r.text()


BAD_PATHS = ["/ui/nope.js", "/ui/js/", "/ui/../admin/api.py", "/ui/%2e%2e/ui.py",
             "/ui/js/..%2f..%2fui.py", "/ui/js/%2e%2e/%2e%2e/ui.py", "/ui/index.html%00",
             "/ui/.hidden", "/ui//etc/passwd", "/ui/js/main.js/", "/ui/JS/MAIN.JS"]


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_nothing_but_the_console_files_is_served(path: str, tmp_path: Path, backends,
                                                       session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    async with (running_gateway(write_config(tmp_path, two_versions(p, p))) as g,
                session.get(URL(g.admin + path, encoded=True)) as r):
        body = await r.read()
        assert r.status == 404, (path, r.status)
        assert b"import " not in body and b"root:" not in body
        assert (await r.json())["error"]["type"] == "not_found"


async def test_only_get_and_head(tmp_path: Path, backends, session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        for method in ("POST", "PUT", "DELETE"):
            async with session.request(method, g.admin + "/ui/", data=b"x") as r:
                assert r.status == 405
                assert (await r.json())["error"]["type"] == "method_not_allowed"
