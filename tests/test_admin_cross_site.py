"""What another origin can make an operator's browser send: never a write that is taken.

A cross-site page cannot add `Authorization` (that needs a CORS preflight, which the
admin API never answers), but behind a proxy that signs operators in with a cookie it
does not need to: a `<form enctype="text/plain">` or a `no-cors` fetch reaches the API
signed in. Such requests can only carry `text/plain`, form or no content type, never
`application/json`, so the API takes a body only with that type (415 otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, write_config

#: what `<form enctype="text/plain">` with the field `{"scope":"global","reason":"x`
#: = `y"}` sends: valid JSON, with no unknown field
FORM_BODY = b'{"scope":"global","reason":"x=y"}\r\n'
CROSS_SITE_TYPES = [{"Content-Type": "text/plain"},
                    {"Content-Type": "text/plain;charset=UTF-8"},
                    {"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "multipart/form-data; boundary=x"},
                    {}]  # (a fetch with a Blob body of no type)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("headers", CROSS_SITE_TYPES, ids=lambda h: h.get("Content-Type", "none"))
async def test_a_write_without_the_json_type_is_415_and_changes_nothing(
        headers: dict[str, str], tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra="alerts:\n  alertmanager: {}\n")
    auth = {"Authorization": f"Bearer {admin_token('killgate:admin', 'alice')}",
            "Origin": "https://evil.example"}
    async with running_gateway(cfg) as g, ClientSession(skip_auto_headers=["Content-Type"]) as s:
        gen = g.gw.holder.doc.generation
        for path, body in (("/v1/kill", FORM_BODY),
                           ("/v1/routes/iris/rollback", b'{"reason":"x=y"}'),
                           ("/v1/alerts/alertmanager", b'{"version":"4","x":"="}')):
            async with s.post(g.admin + path, data=body, headers={**auth, **headers}) as r:
                assert r.status == 415, (path, await r.text())
                assert (await r.json())["error"]["type"] == "unsupported_media_type"
                assert "Access-Control-Allow-Origin" not in r.headers
        assert g.gw.holder.doc.generation == gen and not g.gw.holder.doc.kills
        # the same body as JSON (any letter case, with a charset) is taken
        async with s.post(g.admin + "/v1/kill", data=FORM_BODY, headers={
                **auth, "Content-Type": "Application/JSON; charset=utf-8"}) as r:
            assert r.status == 200, await r.text()
        assert "global" in g.gw.holder.doc.kills


@pytest.mark.timeout(30)
async def test_every_answer_is_neither_sniffed_nor_framed(tmp_path: Path, backends) -> None:
    """JSON answers echo callers' text (an unknown route's name, a field's): a browser must
    never take one for a page to run or frame, whatever the status or endpoint."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    auth = {"Authorization": f"Bearer {admin_token('killgate:admin', 'alice')}"}
    xss = "%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    async with running_gateway(cfg) as g, ClientSession() as s:
        for method, path, headers in (
                ("GET", "/v1/status", auth), ("GET", "/v1/status", {}),
                ("POST", f"/v1/routes/{xss}/rollback", auth), ("GET", f"/v1/{xss}", auth),
                ("GET", "/openapi.json", {}), ("GET", "/healthz", {}), ("DELETE", "/v1/kill", auth)):
            async with s.request(method, g.admin + path, headers=headers,
                                 json={"reason": "x"} if method == "POST" else None) as r:
                assert r.headers.get("X-Content-Type-Options") == "nosniff", (path, r.status)
                assert "frame-ancestors 'none'" in r.headers.get("Content-Security-Policy", "")
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]
                assert r.headers.get("Cross-Origin-Resource-Policy") == "same-origin"
        async with s.get(g.admin + "/ui/") as r:  # the console keeps its own policy
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]


@pytest.mark.timeout(30)
async def test_api_answers_are_never_stored_by_a_cache(tmp_path: Path, backends) -> None:
    """The kill state, who is signed in and a write's receipt are the present's only: a
    cache between the console and the listener (a proxy's, the browser's) must never answer
    a later read with them, nor with its old Date header, from which the console takes the
    server's clock (js/clock.js: a stored answer's Date made every age read younger).
    Found by review of the impconsole2 merge: the API's answers said nothing about caching.
    The console's own files keep theirs (no-cache: revalidated)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    auth = {"Authorization": f"Bearer {admin_token('killgate:admin', 'alice')}"}
    async with running_gateway(cfg) as g, ClientSession() as s:
        for method, path, headers in (
                ("GET", "/v1/status", auth), ("GET", "/v1/whoami", auth), ("GET", "/v1/status", {}),
                ("GET", "/v1/audit", auth), ("POST", "/v1/kill", auth)):
            body = {"scope": "global", "reason": "INC-9 cache"} if method == "POST" else None
            async with s.request(method, g.admin + path, headers=headers, json=body) as r:
                assert r.headers.get("Cache-Control") == "no-store", (path, r.status, r.headers)
        async with s.get(g.admin + "/ui/") as r:
            assert r.status == 200 and r.headers.get("Cache-Control") == "no-cache"
