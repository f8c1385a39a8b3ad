"""A version's `model` rewrites the JSON body's `model` for that version (README) on any
route, not only on one that matches by `match.model`: the body's field was located only when
some route matched by it, so on a path-matched OpenAI route (`/v1/chat/completions`) the
primary, a canary and the shadow all got the client's `"model": "m1"` as sent, and a backend
serving another name answered 404 to every request (a shadow: 100 % disagreement). The
field is now read when the route the request goes to has a version with `model`; a route
without one is not peeked at (its body, valid JSON or not, goes as it came)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)

ROUTES = """\
- name: chat
  match: {{path_prefix: /v1/chat/completions}}
  stable: v1
  protocol: openai
  allow_pin: true
  shadow: {{version: v3, sample: 1.0, max_request_bytes: 1048576}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 50, model: m1-served}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 50, model: m2-served}}
    - {{name: v3, url: "http://127.0.0.1:{p3}", weight: 0, model: m3-served}}
- name: plain
  match: {{path_prefix: /plain}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{p4}", weight: 100}}]
- name: rest
  match: {{path_prefix: /}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{p5}", weight: 100, model: rest-served}}]
"""


def models(rec: Recorder) -> list[str]:
    return [json.loads(r["body"])["model"] for r in rec.requests]


async def test_each_version_and_the_shadow_get_their_own_model_on_a_path_route(
        tmp_path: Path, backends, session: ClientSession) -> None:
    recs = [Recorder() for _ in range(5)]
    ports = [await backends(echo_app(f"v{i + 1}", r)) for i, r in enumerate(recs)]
    v1, v2, v3, plain, rest = recs
    cfg = write_config(tmp_path, ROUTES.format(**{f"p{i + 1}": p for i, p in enumerate(ports)}))
    async with running_gateway(cfg) as g:
        url = g.url + "/v1/chat/completions"
        for pin in ("v1", "v2"):
            async with session.post(url, json={"model": "m1"},
                                    headers={"x-killgate-pin": pin}) as r:
                assert r.status == 200, await r.text()
                assert r.headers["x-killgate-version"] == pin
        # (one copy: only answers of the route's stable are copied, the pin to v2's is
        # counted `not_compared`, shadow.py)
        await wait_until(lambda: len(v3.requests) == 1, 10, what="the shadow copy")
        assert (models(v1), models(v2), models(v3)) == (
            ["m1-served"], ["m2-served"], ["m3-served"]), (models(v1), models(v2), models(v3))
        # a body larger than the data plane keeps at its head: read (peeked) and rewritten
        big = {"model": "m1", "messages": [{"role": "user", "content": "x" * 200_000}]}
        async with session.post(url, json=big, headers={"x-killgate-pin": "v1"}) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: len(v3.requests) == 2, 10, what="the second shadow copy")
        assert models(v1)[-1] == "m1-served" and models(v3)[-1] == "m3-served"
        assert json.loads(v1.requests[-1]["body"])["messages"] == big["messages"]
        # a body with no `model` goes as it came
        async with session.post(url, data=b'{"messages": []}',
                                headers={"x-killgate-pin": "v1"}) as r:
            assert r.status == 200
        assert v1.requests[-1]["body"] == b'{"messages": []}'
        # a route without any version `model` is not peeked at, though a route after it
        # (the catch-all) rewrites: a body that is not JSON (beginning as an object) goes
        # through as it came, no 400
        odd = b'{"model": "m1", /* not JSON */}'
        async with session.post(g.url + "/plain/x", data=odd) as r:
            assert r.status == 200
        assert plain.requests[-1]["body"] == odd
        async with session.post(g.url + "/other", json={"model": "m1"}) as r:
            assert r.status == 200
        assert models(rest) == ["rest-served"]
        async with session.post(g.url + "/other", data=odd) as r:  # (its body is read: 400)
            assert r.status == 400
            assert "not valid JSON" in (await r.json())["error"]["message"]
        assert len(rest.requests) == 1
        assert g.gw.proxy is not None and not g.gw.proxy.peeks.by


async def test_a_killed_rewriting_route_answers_its_kill_without_reading_the_body(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A route killed (or a version of it) answers 503 killed at once, as it did before its
    versions' `model` made its bodies read: not a 400 for a body its rewrite could not read
    (a gzip body, another charset, a body that is not JSON), which sent the client to fix a
    body no backend would see while the route was disabled."""
    recs = [Recorder() for _ in range(5)]
    ports = [await backends(echo_app(f"v{i + 1}", r)) for i, r in enumerate(recs)]
    cfg = write_config(tmp_path, ROUTES.format(**{f"p{i + 1}": p for i, p in enumerate(ports)}))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="rest")
        await kill(session, g.admin, scope="route", route="chat")
        for url, body, headers in (
                (g.url + "/other", b'{"model": "m1", /* not JSON */}', {}),
                (g.url + "/v1/chat/completions", b"\x1f\x8b\x08",
                 {"content-encoding": "gzip"}),
                (g.url + "/v1/chat/completions", b'{"model": "m1"}',
                 {"content-type": "application/json; charset=latin-1"})):
            async with session.post(url, data=body, headers=headers) as r:
                assert r.status == 503, (url, await r.text())
                assert (await r.json())["error"]["type"] == "killed"
        assert not any(rec.requests for rec in recs)
        assert g.gw.proxy is not None and not g.gw.proxy.peeks.by


async def test_a_path_route_before_a_model_route_is_not_peeked_at(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A request whose first match is a route without match.model and without a version
    `model` goes there whatever its body's `model`: a route matching by `model` sorted after
    it (a shorter prefix) can never be chosen, yet its body was read (a body that is not
    JSON: 400; a gzip body: 400), as it was before d25472e said it no longer is."""
    plain, chat = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", plain)), await backends(echo_app("v1", chat))
    cfg = write_config(tmp_path, f"""\
- name: special
  match: {{path_prefix: /v1/chat/completions/special}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}]
- name: chat
  match: {{path_prefix: /v1/chat, model: m1}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{p2}", weight: 100}}]
""")
    async with running_gateway(cfg) as g:
        odd = b'{"model": "m1", /* not JSON */}'
        async with session.post(g.url + "/v1/chat/completions/special", data=odd) as r:
            assert r.status == 200, await r.text()
        async with session.post(g.url + "/v1/chat/completions/special", data=b"\x1f\x8b\x08",
                                headers={"content-encoding": "gzip"}) as r:
            assert r.status == 200, await r.text()
        assert len(plain.requests) == 2 and plain.requests[0]["body"] == odd
        async with session.post(g.url + "/v1/chat/x", json={"model": "m1"}) as r:
            assert r.status == 200, await r.text()
        assert len(chat.requests) == 1
