"""A second `model` part after a file larger than the peek window is refused, however the
body arrives. Found by review: the peek read the first `model` part (gpt-b, a live route's)
and the rest streamed unread; a backend reading its form as Starlette does (FastAPI, vLLM:
the LAST value) was served the killed gpt-a's request by the catch-all."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from aiohttp import BodyPartReader, web

from tests.conftest import bearer, running_gateway, wait_until, write_config
from tests.rawhttp import _head
from tests.test_form_model_kill import routes
from tests.test_formpeek import field, mp

pytestmark = pytest.mark.timeout(30)

H = bearer("killgate:admin", "ops", 10800)


def audio(size: int) -> bytes:
    return (b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + b"\x00\x01" * (size // 2))


def second(size: int) -> bytes:
    return mp(field(b'"model"', b"gpt-b"), audio(size), field(b'"model"', b"gpt-a"))


CTYPE = b"multipart/form-data; boundary=XyZ"


class LastModel:
    """A backend that reads its form with aiohttp's multipart reader and keeps the LAST
    `model`, as Starlette's FormData does; `started` once a request's head is in."""

    def __init__(self) -> None:
        self.started = 0
        self.served: list[str] = []

    def app(self, name: str) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.started += 1
            # (aiohttp's multipart reader, part by part, in memory: `post()` spools files to
            # temporary files it leaves open when the body is cut, as the gateway cuts it)
            reader = await request.multipart()
            models = []
            while (part := await reader.next()) is not None:
                assert isinstance(part, BodyPartReader)
                data = await part.read()
                if part.name == "model" and part.filename is None:
                    models.append(data.decode())
            model = models[-1]
            self.served.append(f"{name}:{model}")
            return web.json_response({"backend": name, "model": model})

        app = web.Application(client_max_size=8 << 20)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


async def _send(port: int, parts: list[bytes], between: object = None) -> tuple[int, bytes]:
    """Send the request head then `parts`, awaiting `between()` before each part after the
    first; the answer's status and body (b"" when the gateway closed without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close"
                     b"\r\nContent-Type: " + CTYPE + b"\r\nContent-Length: %d\r\n\r\n"
                     % sum(map(len, parts)))
        for i, part in enumerate(parts):
            if i and between is not None:
                await between()  # type: ignore[operator]
            writer.write(part)
            await writer.drain()
        status, headers = await _head(reader, 10)
        return status, await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()


@pytest.mark.parametrize("how", ["held", "streamed"])
async def test_a_second_model_part_past_the_window_never_reaches_the_killed_model(
        tmp_path: Path, backends, session, how: str) -> None:  # type: ignore[no-untyped-def]
    back = LastModel()
    pa, po = await backends(back.app("a")), await backends(back.app("other"))
    cfg_routes = routes(pa, po).replace("path_prefix: /v1}", "path_prefix: /v1, model: gpt-b}")
    cfg = write_config(tmp_path, cfg_routes, extra="server: {model_peek_bytes: 4096}\n")
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=H, json={
                "scope": "route", "route": "chat-a", "reason": "bad model"}) as r:
            assert r.status == 200, await r.text()
        port = int(g.url.rsplit(":", 1)[1])
        if how == "held":  # (a small body, 32 KiB: all in memory when routed)
            status, answer = await _send(port, [second(32 << 10)])
        else:  # the second `model` part comes once the backend is reading the first ones
            body = second(128 << 10)  # (past SMALL_BODY: it streams)
            cut = len(body) - 200

            async def started() -> None:
                await wait_until(lambda: back.started == 1, 10, what="the backend reading")
            status, answer = await _send(port, [body[:cut], body[cut:]], started)
        assert status == 400, (status, answer, back.served)
        msg = json.loads(answer)["error"]["message"]
        assert "more than one 'model'" in msg, msg
        # the same body with one `model` goes to the live route, whole
        one = mp(field(b'"model"', b"gpt-b"), audio(128 << 10), field(b'"x"', b"1"))
        async with session.post(g.url + "/v1/audio/transcriptions", data=one,
                                headers={"content-type": CTYPE.decode()}) as r:
            assert r.status == 200 and (await r.json())["model"] == "gpt-b"
    assert back.served == ["other:gpt-b"]  # never "other:gpt-a": the killed model


def werkzeug_app(seen: list[str]) -> web.Application:
    """A backend that reads its form as Flask does (Werkzeug's multipart parser, the FIRST
    `model`): a line break before `--boundary` is CRLF, LF or CR to it."""
    formparser = pytest.importorskip("werkzeug.formparser")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        _, form, files = formparser.parse_form_data({
            "REQUEST_METHOD": "POST", "CONTENT_TYPE": request.headers["content-type"],
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)})
        for f in files.values():
            f.close()
        seen.append(form.get("model"))
        return web.json_response({"model": form.get("model")})

    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("brk", [b"\n", b"\r"])
async def test_a_model_part_after_a_bare_line_break_never_reaches_the_killed_model(
        tmp_path: Path, backends, session, brk: bytes) -> None:  # type: ignore[no-untyped-def]
    """Found while checking readers: Werkzeug takes `\\n--boundary` (or `\\r`) for a boundary
    line, RFC 2046 and the peek CRLF only: a file whose bytes held `\\n--XyZ` and a `model`
    part read gpt-a (killed) there, gpt-b (the live route's) here."""
    seen: list[str] = []
    pw = await backends(werkzeug_app(seen))
    cfg_routes = routes(pw, pw).replace("path_prefix: /v1}", "path_prefix: /v1, model: gpt-b}")
    cfg = write_config(tmp_path, cfg_routes, extra="server: {model_peek_bytes: 65536}\n")
    hidden = brk + b"--XyZ\r\n" + field(b'"model"', b"gpt-a")
    body = mp(audio(4096)[:-8] + hidden, field(b'"model"', b"gpt-b"))
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=H, json={
                "scope": "route", "route": "chat-a", "reason": "bad model"}) as r:
            assert r.status == 200, await r.text()
        port = int(g.url.rsplit(":", 1)[1])
        status, answer = await _send(port, [body])
        assert status == 400, (status, answer, seen)
        assert "bare CR or LF" in json.loads(answer)["error"]["message"]
        fine = mp(audio(4096) + b"x--XyZ\r\n", field(b'"model"', b"gpt-b"))  # (content)
        status, answer = await _send(port, [fine])
        assert status == 200 and json.loads(answer)["model"] == "gpt-b", answer
    assert seen == ["gpt-b"]


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_refusal_mid_stream_closes_the_connection_before_a_pipelined_request(
        tmp_path: Path, backends, session, framing: str) -> None:  # type: ignore[no-untyped-def]
    """Review of impform2: the scanner refuses the body after its head went out; the rest
    of that body, and a request pipelined behind it, must never be read as a request of
    its own (smuggling): one 400, then the connection closes, and no backend is served."""
    back = LastModel()
    pa, po = await backends(back.app("a")), await backends(back.app("other"))
    cfg_routes = routes(pa, po).replace("path_prefix: /v1}", "path_prefix: /v1, model: gpt-b}")
    cfg = write_config(tmp_path, cfg_routes, extra="server: {model_peek_bytes: 4096}\n")

    def head(frame: bytes) -> bytes:
        return (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: " + CTYPE
                + b"\r\n" + frame + b"\r\n\r\n")

    body = second(128 << 10)
    nxt = mp(field(b'"model"', b"gpt-b"), audio(1024))
    if framing == "chunked":
        chunks = b"".join(b"%x\r\n%b\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])
                          for i in range(0, len(body), 4096))
        first = head(b"Transfer-Encoding: chunked") + chunks + b"0\r\n\r\n"
    else:
        first = head(b"Content-Length: %d" % len(body)) + body
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(first + head(b"Content-Length: %d" % len(nxt)) + nxt)
            got = b""
            while data := await asyncio.wait_for(reader.read(65536), 10):
                got += data
        except ConnectionError:
            pass
        finally:
            writer.close()
    assert got.startswith(b"HTTP/1.1 400 ") and got.count(b"HTTP/1.1 ") == 1, got[:300]
    assert back.served == []
