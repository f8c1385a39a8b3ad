"""A form body's `model` (OpenAI's multipart endpoints: /v1/audio/transcriptions, ...; and
urlencoded forms) routes and is killed as a JSON body's is. Found by a hostile review: the
data plane read `model` from JSON only, so with route `chat-a` (match.model gpt-a) killed and
a catch-all serving the same model, a multipart request with model=gpt-a went through the
catch-all, and `match.model` never applied to those endpoints."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession, FormData, web

from tests.backends import Recorder, echo_app
from tests.conftest import bearer, free_port, running_gateway, wait_until, write_config
from tests.rawhttp import exchange

pytestmark = pytest.mark.timeout(30)

H = bearer("killgate:admin", "ops", 10800)


def form_backend(name: str, seen: list[str]) -> web.Application:
    """A backend that reads its form as aiohttp's server does (a real multipart reader)."""

    async def handle(request: web.Request) -> web.Response:
        form = await request.post()
        model = form.get("model")
        for value in form.values():  # (its files: closed here, not by the collector)
            if isinstance(value, web.FileField):
                value.file.close()
        seen.append(name)
        return web.json_response({"backend": name, "model": model})

    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def routes(pa: int, po: int, rewrite: str = "") -> str:
    model = f', model: "{rewrite}"' if rewrite else ""
    return textwrap.dedent(f"""\
        - name: chat-a
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{pa}", weight: 100{model}}}
        - name: other
          match: {{path_prefix: /v1}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{po}", weight: 100}}
        """)


def audio_form(model: str, audio: bytes = b"RIFF....WAVE") -> FormData:
    form = FormData()
    form.add_field("model", model)
    form.add_field("file", io.BytesIO(audio), filename="a.wav", content_type="audio/wav")
    return form


async def _gateway_pair(tmp_path: Path, backends, seen: list[str],  # type: ignore[no-untyped-def]
                        rewrite: str = "") -> Path:
    pa = await backends(form_backend("a", seen))
    po = await backends(form_backend("other", seen))
    return write_config(tmp_path, routes(pa, po, rewrite),
                        extra="server: {model_peek_bytes: 4096}\n")


async def test_a_killed_model_is_not_served_by_the_catch_all_through_a_form(
        tmp_path: Path, backends, session: ClientSession) -> None:
    seen: list[str] = []
    cfg = await _gateway_pair(tmp_path, backends, seen)
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=H, json={
                "scope": "route", "route": "chat-a", "reason": "bad model"}) as r:
            assert r.status == 200, await r.text()
        url = g.url + "/v1/audio/transcriptions"
        for data in (audio_form("gpt-a"), {"model": "gpt-a"}):
            async with session.post(url, data=data) as r:
                body = await r.read()
                assert (r.status, seen) == (503, []), (
                    f"a form with the killed model went to route "
                    f"{r.headers.get('x-killgate-route')!r}: {body[:200]!r}")
        async with session.post(url, data=audio_form("gpt-b")) as r:  # another model
            assert r.status == 200 and r.headers["x-killgate-route"] == "other"


async def test_match_model_applies_to_form_bodies(
        tmp_path: Path, backends, session: ClientSession) -> None:
    seen: list[str] = []
    cfg = await _gateway_pair(tmp_path, backends, seen)
    async with running_gateway(cfg) as g:
        url = g.url + "/v1/audio/transcriptions"
        async with session.post(url, data=audio_form("gpt-a")) as r:
            assert r.status == 200 and r.headers["x-killgate-route"] == "chat-a"
            assert (await r.json())["model"] == "gpt-a"
        async with session.post(url, data={"model": "gpt-a", "x": "1"}) as r:
            assert r.status == 200 and r.headers["x-killgate-route"] == "chat-a"
        # a file of megabytes after `model` streams on: only the window is read
        big = audio_form("gpt-a", b"\0" * (2 << 20))
        async with session.post(url, data=big) as r:
            assert r.status == 200 and r.headers["x-killgate-route"] == "chat-a"
        async with session.post(url, data={"x": "1"}) as r:  # no model: as today
            assert r.status == 200 and r.headers["x-killgate-route"] == "other"


def _multipart(*parts: bytes, boundary: bytes = b"XyZ") -> tuple[bytes, bytes]:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + boundary + b"--\r\n", b"multipart/form-data; boundary=" + boundary


_MODEL = b'Content-Disposition: form-data; name="model"\r\n\r\n'
_FILE = b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


@pytest.mark.parametrize(("body", "ctype"), [
    pytest.param(*_multipart(_MODEL + b"gpt-b", _FILE + b"x", _MODEL + b"gpt-a"),
                 id="model-twice"),
    pytest.param(*_multipart(_FILE + b"x" * 8192, _MODEL + b"gpt-a"),
                 id="model-after-a-file-past-the-window"),
    pytest.param(*_multipart(b'Content-Disposition: form-data; name*=utf-8\'\'model\r\n\r\n'
                             b"gpt-a"), id="rfc2231-name"),
    pytest.param(*_multipart(b'Content-Disposition: form-data; name="x"; name*0=model\r\n\r\n'
                             b"gpt-b", _MODEL + b"gpt-a"), id="rfc2231-continued-name"),
    pytest.param(b"pre\n" + _multipart(_MODEL + b"gpt-a")[0], _multipart()[1],
                 id="preamble-with-a-bare-lf"),
    pytest.param(b"--XyZ--x\r\n" + _multipart(_MODEL + b"gpt-a")[0], _multipart()[1],
                 id="close-delimiter-then-bytes"),  # aiohttp: preamble; gpt-a
    pytest.param(*_multipart(b'Content-Disposition: form-data; name="/model"\r\n\r\ngpt-a',
                             _MODEL + b"gpt-b"), id="slash-model"),  # aiohttp: "model"
    pytest.param(*_multipart(b'Content-Disposition: form-data; name="mo\\del"\r\n\r\ngpt-a',
                             _MODEL + b"gpt-b"), id="backslash-model"),  # aiohttp: "model"
    pytest.param(b"x=1;model=gpt-b&model=gpt-a", b"application/x-www-form-urlencoded",
                 id="urlencoded-semicolon-read-two-ways"),
    pytest.param(*_multipart(b'Content-Disposition: form-data; name="model"\r\n'
                             b"Content-Transfer-Encoding: base64\r\n\r\nZ3B0LWE="),
                 id="transfer-encoded-model"),
    pytest.param(b"model=gpt-b&model=gpt-a", b"application/x-www-form-urlencoded",
                 id="urlencoded-twice"),
    pytest.param(b"model=gpt%2", b"application/x-www-form-urlencoded", id="bad-escape"),
    pytest.param(b"model=gpt-a\r\n", b"application/x-www-form-urlencoded",
                 id="trailing-whitespace"),  # aiohttp strips it: gpt-a
])
async def test_a_form_whose_model_cannot_be_read_one_way_is_refused(
        tmp_path: Path, backends, body: bytes, ctype: bytes) -> None:
    seen: list[str] = []
    cfg = await _gateway_pair(tmp_path, backends, seen)
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        head = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: " + ctype + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        status, _, answer = await exchange(port, head + body)
    assert status == 400, (status, answer)
    assert "model" in json.loads(answer)["error"]["message"]
    assert seen == []


async def test_a_form_is_refused_for_a_version_that_rewrites_model(
        tmp_path: Path, backends, session: ClientSession) -> None:
    seen: list[str] = []
    cfg = await _gateway_pair(tmp_path, backends, seen, rewrite="gpt-a-2024")
    async with running_gateway(cfg) as g:
        url = g.url + "/v1/audio/transcriptions"
        async with session.post(url, data=audio_form("gpt-a")) as r:
            assert r.status == 400
            assert "cannot rewrite" in (await r.json())["error"]["message"]
        async with session.post(url, data=audio_form("gpt-b")) as r:  # the catch-all's
            assert r.status == 200 and r.headers["x-killgate-route"] == "other"
        async with session.post(url, json={"model": "gpt-a"}) as r:  # JSON: rewritten
            assert r.status == 200 and (await r.json())["backend"] == "a"
    assert seen == ["other", "a"]


def _rewriting(stable: int, canary: int, shadow: int) -> str:
    """Route `chat` by model gpt-a: stable v1 (as sent), v2 and the shadow v3 rewrite."""
    return textwrap.dedent(f"""\
        - name: chat
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          outlier: {{consecutive_gateway_failures: 50}}
          shadow: {{version: v3, sample: 1.0, max_request_bytes: 1048576}}
          versions:
            - {{name: v1, url: "http://127.0.0.1:{stable}", weight: 100}}
            - {{name: v2, url: "http://127.0.0.1:{canary}", weight: 0, model: m2}}
            - {{name: v3, url: "http://127.0.0.1:{shadow}", weight: 0, model: m3}}
        """)


async def test_a_form_is_never_moved_or_copied_to_a_version_that_rewrites_model(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """Failover from v1 (no `model`) and the shadow copy skip versions with `model` for a
    form (a form's `model` has no JSON offsets: rewritten, its bytes were spliced)."""
    v1, v2, v3 = Recorder(), Recorder(), Recorder()
    p1, p2, p3 = (await backends(echo_app("v1", v1)), await backends(echo_app("v2", v2)),
                  await backends(echo_app("v3", v3)))
    dead = free_port()
    async with running_gateway(write_config(tmp_path, _rewriting(p1, p2, p3))) as g:
        url = g.url + "/v1/audio/transcriptions"
        async with session.post(url, data=audio_form("gpt-a")) as r:  # to v1, not copied
            assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
        async with session.post(url, json={"model": "gpt-a"}) as r:  # JSON: copied
            assert r.status == 200
        await wait_until(lambda: len(v3.requests) == 1, 10, what="the shadow copy")
        await wait_until(lambda: g.gw.proxy is not None and g.gw.proxy.shadow is not None
                         and not g.gw.proxy.shadow.leases.get("chat"), 10, what="copies")
        assert [json.loads(rq["body"])["model"] for rq in v3.requests] == ["m3"]
    cfg = write_config(tmp_path, _rewriting(dead, p2, p3))
    async with running_gateway(cfg) as g:
        url = g.url + "/v1/audio/transcriptions"
        async with session.post(url, data=audio_form("gpt-a")) as r:
            text = await r.text()
            assert r.status == 502, text
            msg = json.loads(text)["error"]["message"]
            assert "not failed over to v2" in msg and "cannot rewrite" in msg, msg
    assert v2.requests == []


async def test_a_form_to_a_rewriting_version_of_a_path_route_is_refused(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A route matched by path (the version chosen first, the body read for it): a form
    with a `model` is 400, one without goes as it came, as a JSON body without one does."""
    v1 = Recorder()
    p1 = await backends(echo_app("v1", v1))
    routes = textwrap.dedent(f"""\
        - name: audio
          match: {{path_prefix: /v1/audio}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100, model: whisper-2}}
        """)
    async with running_gateway(write_config(tmp_path, routes)) as g:
        url = g.url + "/v1/audio/transcriptions"
        async with session.post(url, data=audio_form("whisper-1")) as r:
            assert r.status == 400 and "cannot rewrite" in (await r.json())["error"]["message"]
        async with session.post(url, data={"language": "en"}) as r:
            assert r.status == 200
    assert [rq["body"] for rq in v1.requests] == [b"language=en"]


@pytest.mark.parametrize(("body", "ctype"), [
    pytest.param(b"This is a multi-part message in MIME format.\r\n"
                 + _multipart(_MODEL + b"gpt-a", _FILE + b"RIFF")[0], _multipart()[1],
                 id="preamble"),
    pytest.param(*_multipart(_MODEL + b"gpt-a", b'Content-Disposition: form-data; name="file"; '
                             b"filename*=UTF-8''%C3%A9t%C3%A9.wav\r\n\r\nRIFF"),
                 id="rfc8187-filename"),
    pytest.param(*_multipart(_MODEL + b"gpt-a", b'Content-Disposition: form-data; name="file"; '
                             b'filename="C:\\Users\\me\\a.wav"\r\n\r\nRIFF'),
                 id="windows-path-filename"),
    pytest.param(b"prompt=a;b&model=gpt-a", b"application/x-www-form-urlencoded",
                 id="urlencoded-semicolon-in-a-value"),
])
async def test_a_rare_form_read_one_way_by_every_reader_is_routed_by_its_model(
        tmp_path: Path, backends, body: bytes, ctype: bytes) -> None:
    """A preamble, filename*= and a raw ';' were refused (400) though aiohttp, Werkzeug and
    python-multipart read the same `model` from them (or python-multipart refuses the body,
    a preamble): now routed by it, and the backend's form reader reads the same."""
    seen: list[str] = []
    cfg = await _gateway_pair(tmp_path, backends, seen)
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        head = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: " + ctype + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        status, headers, answer = await exchange(port, head + body)
    assert (status, headers.get("x-killgate-route")) == (200, "chat-a"), answer
    assert json.loads(answer)["model"] == "gpt-a" and seen == ["a"]


async def test_messages_about_a_form_body_s_model_name_the_form_not_json(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A form without `model` on model-only routes was 404 "... with no 'model' field in the
    JSON body", and a form in latin-1 400 "... is read in JSON as UTF-8 only" (found by
    review): each names the body kind read."""
    seen: list[str] = []
    pa = await backends(form_backend("a", seen))
    only = routes(pa, pa).split("- name: other")[0]
    async with running_gateway(write_config(tmp_path, only)) as g:
        url = g.url + "/v1/audio/transcriptions"
        form = FormData()
        form.add_field("file", io.BytesIO(b"RIFF"), filename="a.wav")
        for data, kind in ((form, "multipart form body"), ({"x": "1"}, "urlencoded form body")):
            async with session.post(url, data=data) as r:
                msg = (await r.json())["error"]["message"]
                assert r.status == 404 and msg.endswith(
                    f"with no 'model' field in the {kind}"), msg
        async with session.post(url, data=b"model=gpt-a", headers={
                "content-type": "application/x-www-form-urlencoded; charset=latin-1"}) as r:
            msg = (await r.json())["error"]["message"]
            assert r.status == 400 and "the 'model' of a urlencoded form body" in msg, msg
            assert "JSON" not in msg, msg
    assert seen == []
