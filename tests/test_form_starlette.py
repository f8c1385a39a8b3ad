"""The form `model` the gateway routes by is the one Starlette reads (python-multipart: FastAPI,
vLLM and most OpenAI-compatible servers), or the request is refused. The form checks were
compared with aiohttp and Werkzeug only (test_form_boundary, test_form_second_model); this
sends hostile form bodies (boundary shapes, preambles, epilogues, repeated and escaped
names, `name*=`, `name*0=`, `filename*=`, whitespace, odd Content-Types, bodies that stream
past the peek window) through a real gateway to real backends that read the form as
Starlette's `Request.form()` does, over the raw bytes and Content-Type they were sent, and
checks: each request is refused (4xx), or the backend of the route chosen by `model` reads
that model (gpt-a's backend gpt-a, gpt-b's gpt-b, the catch-all's neither). A catch-all
reading gpt-a is the killed model served."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from tests.conftest import running_gateway, write_config
from tests.rawhttp import exchange
from tests.test_formpeek import (
    MP,
    UE,
    field,
    mp,
    test_a_form_read_two_ways_is_refused,
    test_a_rare_form_every_reader_reads_one_way_is_accepted,
)

pytestmark = pytest.mark.timeout(60)


MODEL = field(b'"model"', b"gpt-a")
B = field(b'"model"', b"gpt-b")


def audio(size: int) -> bytes:
    return (b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + b"\x00\x01" * (size // 2))


def disp(params: bytes, value: bytes = b"gpt-a") -> bytes:
    return b"Content-Disposition: form-data; " + params + b"\r\n\r\n" + value


def ctype(extra: str) -> bytes:
    return f"multipart/form-data; {extra}".encode()


M, U = MP.encode(), UE.encode()
#: (Content-Type, body): shapes beyond test_formpeek's (which are added below)
SHAPES: list[tuple[bytes, bytes]] = [
    (M, mp(MODEL)), (M, mp(field(b"model", b"gpt-a"))), (M, mp(field(b"'model'", b"gpt-a"))),
    (M, mp(field(b'"model"', b" gpt-a "))), (M, mp(field(b'"model"', b"gpt-a\r\n"))),
    (M, mp(b'Content-Disposition:form-data;name="model"\r\n\r\ngpt-a')),
    (M, mp(b'content-disposition: FORM-DATA; NAME="model"\r\n\r\ngpt-a')),
    (M, mp(b'Content-Disposition : form-data; name="model"\r\n\r\ngpt-a')),
    (M, mp(b'X: y\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-a')),
    (M, mp(b'Content-Disposition: form-data; name="x"\r\n' + disp(b'name="model"'))),
    (M, mp(disp(b'name="model"; name="x"'))), (M, mp(disp(b'name="x"; name="model"'))),
    (M, mp(disp(b'name="model";'))), (M, mp(disp(b'name="model" ; x=1'))),
    (M, mp(disp(b'x=1; name="model"'))), (M, mp(disp(b'name="model"; filename=""'))),
    (M, mp(disp(b'name="model"; filename'))), (M, mp(disp(b'name="mod\\el"'))),
    (M, mp(disp(b'name="model'))), (M, mp(disp(b'name=""model""'))),
    (M, mp(disp(b"name*=UTF-8''model"))), (M, mp(disp(b"name=\"x\"; name*=UTF-8''model"))),
    (M, mp(disp(b'name*0="mo"; name*1="del"'))), (M, mp(disp(b'name="x"; name*0="model"'))),
    (M, mp(disp(b"name=\"x\"; filename*=UTF-8''model"))),
    (M, mp(disp(b'name="x"; filename="a\\"; name="model"'))),
    (M, mp(field(b'"model"', b"gpt-a", b"Content-Type: application/octet-stream\r\n"))),
    (M, mp(field(b'"model"', b"gpt-\xe9", b"Content-Type: text/plain; charset=latin-1\r\n"))),
    (M, mp(field(b'"model"', b"gpt-\xc3\xa9"))),
    (M, mp(B, MODEL)), (M, mp(MODEL, B)),
    # epilogues, close delimiters, a part after the end
    (M, mp(MODEL) + b"\r\n--XyZ\r\n" + B + b"\r\n--XyZ--\r\n"),
    (M, mp(B) + b"epilogue\r\n--XyZ\r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    (M, b"--XyZ\r\n" + MODEL + b"\r\n--XyZ--"), (M, b"--XyZ\r\n" + MODEL + b"\r\n--XyZ"),
    (M, b"--XyZ\r\n" + MODEL + b"\r\n--XyZ\r\n"),
    (M, b"--XyZ\r\n" + B + b"\r\n--XyZ--x\r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    # whitespace after a boundary, a longer boundary, line breaks before the first
    (M, b"--XyZ \r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    (M, b"--XyZ\t\r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    (M, b"--XyZ\r\n" + B + b"\r\n--XyZ  \r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    (M, b"--XyZ\r\n" + B + b"\r\n--XyZZ\r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    (M, b"\r\n--XyZ\r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    (M, b"\n--XyZ\r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    (M, b"--XyZ\r\n\r\n" + MODEL + b"\r\n--XyZ--\r\n"),
    (M, b"--XyZ\r\n" + MODEL.replace(b"\r\n\r\n", b"\r\n\n") + b"\r\n--XyZ--\r\n"),
    (M, b"--XyZ\r\n" + MODEL.replace(b"\r\n\r\n", b"\n\n") + b"\r\n--XyZ--\r\n"),
    (M, mp(field(b'"f"', b"x\r\n--XyZ-" + b"\r\n" + MODEL), B)),
    # the Content-Type's parameters
    (ctype('boundary="XyZ"; charset=utf-8'), mp(MODEL)),
    (ctype("charset=utf-8; boundary=XyZ"), mp(MODEL)),
    (b"multipart/form-data;boundary=XyZ", mp(MODEL)), (ctype("boundary=XyZ;"), mp(MODEL)),
    (ctype("boundary=Abc; boundary=XyZ"), mp(MODEL)),
    (ctype("boundary=XyZ; boundary=Abc"), mp(MODEL, boundary=b"Abc") + mp(B)),
    (ctype("BOUNDARY=XyZ"), mp(MODEL)), (ctype('boundary="XyZ'), mp(MODEL)),
    (ctype("boundary='XyZ'"), mp(MODEL, boundary=b"'XyZ'")),
    (ctype("boundary='XyZ'"), mp(MODEL)),
    (ctype('boundary="Xy\\Z"'), mp(MODEL)), (ctype('boundary="Xy\\Z"'),
                                               mp(MODEL, boundary=b"Xy\\Z")),
    (ctype('boundary="Xy\\"Z"'), mp(MODEL, boundary=b'Xy"Z')),
    (ctype('boundary="Xy\\"Z"'), mp(MODEL, boundary=b'Xy\\"Z')),
    (ctype("boundary=XyZ\t"), mp(MODEL)), (b"Multipart/Form-Data; boundary=XyZ", mp(MODEL)),
    (b"multipart/form-data ; boundary=XyZ", mp(MODEL)),
    (b"multipart/mixed; boundary=XyZ", mp(MODEL)),
    (b"multipart/form-data, application/json; boundary=XyZ", mp(MODEL)),
    (b"multipart/form-data; boundary=XyZ, text/plain", mp(MODEL)),
    (b"multipart/form-data; boundary*=utf-8''Abc; boundary=XyZ",
     mp(MODEL, boundary=b"Abc") + mp(B)),
    # urlencoded
    (U + b"; charset=latin-1", b"model=gpt-%E9"), (U + b"; charset=utf-8", b"model=gpt-a"),
    (U + b" ; x=1", b"model=gpt-a"), (b"Application/X-WWW-Form-Urlencoded", b"model=gpt-a"),
    (U, b"model"), (U, b"model="), (U, b"model=gpt-a&model"), (U, b"model&model=gpt-a"),
    (U, b"&&model=gpt-a&&"), (U, b"model=gpt-a=b"), (U, b"model=gpt+a"),
    (U, b"mo+del=gpt-a"), (U, b"model%00=gpt-a"), (U, b"model=gpt%00a"),
    (U, b"\xef\xbb\xbfmodel=gpt-a"), (U, b"model=gpt-a%"), (U, b"model%3Dgpt-a"),
    (U, b"model=gpt-a&model%3D=b"), (U, b"%6dodel=gpt-a&model=gpt-b"), (U, b"model[]=gpt-a"),
    (U, b"model=%C3%A9"), (U, b"model=%C3"), (U, b" model=gpt-a"), (U, b"model =gpt-a"),
    (U, b"model=gpt-a;model=gpt-b"), (U, b"model=gpt-b&x=1;model=gpt-a"),
    (b"text/plain", b"model=gpt-a"), (b"text/plain; x=multipart/form-data", b"model=gpt-a"),
    # past the peek window (streamed: formscan reads the rest)
    (M, mp(B, audio(128 << 10))), (M, mp(B, audio(128 << 10), MODEL)),
    (M, mp(audio(128 << 10), MODEL)), (M, mp(B, audio(128 << 10)) + b"\r\n--XyZ\r\n" + MODEL),
    (M, mp(B, audio(128 << 10)[:-10] + b"\r\n--XyZ\r\n" + MODEL)),
    (M, mp(B, audio(128 << 10)[:-10] + b"\n--XyZ\r\n" + MODEL)),
]


def _params(test: Any) -> Iterator[tuple[bytes, bytes]]:
    """The (Content-Type, body) cases of one of test_formpeek's parametrized tests."""
    for mark in test.pytestmark:
        if mark.name == "parametrize":
            for case in mark.args[1]:
                yield case[0].encode(), case[1]


CASES = [*SHAPES, *_params(test_a_form_read_two_ways_is_refused),
         *_params(test_a_rare_form_every_reader_reads_one_way_is_accepted)]


async def starlette_model(ctype: bytes, body: bytes) -> str | None:
    """The `model` Starlette's `Request.form()` reads (FormData.get: the LAST one; what a
    FastAPI `model: str = Form()` gets) from these bytes under this Content-Type; raises
    when Starlette refuses the form (its server answers 400)."""
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(scope, receive).form()
    try:
        value = form.get("model")
        return value if value is None or isinstance(value, str) else "(a file)"
    finally:
        await form.close()


def starlette_app(name: str, seen: list[tuple[str, str | None]]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            model = await starlette_model(request.headers.get("content-type", "").encode(
                "latin-1"), body)
        except MultiPartException as exc:  # (Starlette's server answers it 400)
            return web.json_response({"refused": str(exc)}, status=400)
        seen.append((name, model))
        return web.json_response({"backend": name, "model": model})

    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def three_routes(pa: int, pb: int, po: int) -> str:
    return textwrap.dedent(f"""\
        - name: chat-a
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          versions: [{{name: v1, url: "http://127.0.0.1:{pa}", weight: 100}}]
        - name: chat-b
          match: {{path_prefix: /v1, model: gpt-b}}
          stable: v1
          versions: [{{name: v1, url: "http://127.0.0.1:{pb}", weight: 100}}]
        - name: other
          match: {{path_prefix: /v1}}
          stable: v1
          versions: [{{name: v1, url: "http://127.0.0.1:{po}", weight: 100}}]
        """)


#: what each backend may read: its route's model; the catch-all neither routed one
ALLOWED = {"a": lambda m: m == "gpt-a", "b": lambda m: m == "gpt-b",
           "other": lambda m: m not in ("gpt-a", "gpt-b")}


def framed(body: bytes, framing: str) -> bytes:
    """The framing header and the body as sent: with a Content-Length, or chunked (4 KiB
    chunks, so a body arrives over several reads)."""
    if framing == "length":
        return b"Content-Length: %d\r\n\r\n" % len(body) + body
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])
                      for i in range(0, len(body), 4096))
    return b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_every_hostile_form_is_refused_or_read_as_starlette_reads_it(
        tmp_path: Path, backends, framing: str) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, str | None]] = []
    pa, pb, po = [await backends(starlette_app(n, seen)) for n in ("a", "b", "other")]
    cfg = write_config(tmp_path, three_routes(pa, pb, po),
                       extra="server: {model_peek_bytes: 4096}\n")
    wrong, refused, served = [], 0, 0
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        for ct, body in CASES:
            before = len(seen)
            status, _, answer = await exchange(port, (
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: " + ct + b"\r\n") + framed(body, framing))
            assert status < 500, (status, answer, ct, body[:200])
            if len(seen) == before:  # refused: by the gateway, or by Starlette
                assert 400 <= status < 500, (status, answer, ct, body[:200])
                refused += 1
                continue
            served += 1
            (name, model), = seen[before:]
            if not ALLOWED[name](model):
                wrong.append((name, model, ct, body[:200], json.loads(answer)))
    assert not wrong, wrong
    assert refused > 40 and served > 30, (refused, served)  # (both kinds were exercised)


@pytest.mark.parametrize(("ct", "body", "model"), [
    (M, mp(MODEL, audio(1024)), "gpt-a"), (U, b"x=1&model=gpt-a", "gpt-a"),
    (M, mp(B, MODEL), "gpt-a"), (M, mp(disp(b'name="x"; name*0="model"')), None)])
async def test_the_starlette_reader_reads_as_starlette_does(ct: bytes, body: bytes,
                                                            model: str | None) -> None:
    """The reference reader: the LAST `model`, and no RFC 2231 continuations."""
    assert await starlette_model(ct, body) == model
