"""Conditional GETs of the console's big reads (gateway/admin/etag.py): /v1/status and
/v1/traffic carry a strong ETag (a hash of the exact body) and answer `If-None-Match` with
a bodiless 304 while nothing changed; a change (a kill) is a full 200 at once. In-process
gateways on a real local store; the matching rule sans-I/O.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.admin.etag import matches
from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(30)

TAG = '"0123456789abcdef0123456789abcdef"'


@pytest.mark.parametrize(("header", "hit"), [
    (None, False), ("", False), (TAG, True), (f"W/{TAG}", True), (f'"x", {TAG}', True),
    ("*", True), ('"x"', False), (TAG[1:-1], False), ("garbage,,", False),
])
def test_if_none_match_by_the_weak_comparison(header: str | None, hit: bool) -> None:
    assert matches(header, TAG) is hit


async def _get(s: ClientSession, url: str, tag: str | None = None
               ) -> tuple[int, bytes, dict[str, str]]:
    h = bearer("killgate:read")
    if tag is not None:
        h["If-None-Match"] = tag
    async with s.get(url, headers=h) as r:
        return r.status, await r.read(), {k.lower(): v for k, v in r.headers.items()}


async def test_traffic_answers_304_while_unchanged(tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        url = g.admin + "/v1/traffic"
        got: list[tuple[int, bytes, dict[str, str]]] = []

        async def revalidated() -> bool:  # (a 5 s bucket may start between the two GETs)
            st, body, h = await _get(session, url)
            assert st == 200 and h["etag"] == '"' + hashlib.blake2b(
                body, digest_size=16).hexdigest() + '"'
            got[:] = [await _get(session, url, h["etag"]), (st, body, h)]
            return got[0][0] == 304

        await wait_until(revalidated, 10, 0.05, "a 304 for the ETag just sent")
        (st, body, h), full = got
        assert body == b"" and h["etag"] == full[2]["etag"]
        assert h["cache-control"] == "no-store"  # (kept by no cache: the page keeps it)
        for bad in ('"x"', "garbage", full[2]["etag"][1:-1]):  # not this tag: the full body
            st, body, _ = await _get(session, url, bad)
            assert st == 200 and body, bad


async def test_a_kill_changes_the_status_etag_at_once(tmp_path: Path, backends,
                                                      session) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        url = g.admin + "/v1/status"
        st, body, h = await _get(session, url)
        assert st == 200 and h["etag"].startswith('"') and b'"kills"' in body
        async with session.post(g.admin + "/v1/kill", headers=bearer("killgate:kill"),
                                json={"scope": "global", "reason": "etag"}) as r:
            assert r.status == 200, await r.text()
        st, body, h2 = await _get(session, url, h["etag"])
        assert st == 200 and h2["etag"] != h["etag"] and b"etag" in body


async def test_the_stable_status_answers_304_until_a_kill(tmp_path: Path, backends,
                                                          session) -> None:
    """The full document changes on every call (heartbeat ages, store staleness): its ETag
    never holds. `?fields=stable` leaves those out: a 304 until something changes."""
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        url = g.admin + "/v1/status?fields=stable"
        tag: list[str] = []

        async def revalidated() -> bool:  # (the first reload check lands once, at start)
            st, body, h = await _get(session, url, tag[0] if tag else None)
            if st == 200:
                assert b'"instances"' not in body and b'"staleness_ms": null' in body
                tag[:] = [h["etag"]]
            return st == 304

        await wait_until(revalidated, 10, 0.05, "a 304 for the stable status")
        st, body, _ = await _get(session, g.admin + "/v1/status", tag[0])  # (the full one)
        assert st == 200 and b'"instances"' in body
        async with session.post(g.admin + "/v1/kill", headers=bearer("killgate:kill"),
                                json={"scope": "global", "reason": "etag"}) as r:
            assert r.status == 200, await r.text()
        st, body, h = await _get(session, url, tag[0])
        assert st == 200 and h["etag"] != tag[0] and b"etag" in body
        for bad in ("x", "stable&fields=all", ""):
            async with session.get(g.admin + "/v1/status?fields=" + bad,
                                   headers=bearer("killgate:read")) as r:
                assert r.status == 400, bad
                assert (await r.json())["error"]["type"] == "bad_request"
