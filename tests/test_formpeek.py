"""formpeek: a form body's `model` read strictly (sans-I/O), or refused; never another's."""

from __future__ import annotations

import pytest

from gateway.dataplane.formpeek import MAX_MODEL, MAX_PART_HEAD, body_model, form_kind
from gateway.dataplane.jsonpeek import Ambiguous, Unreadable

pytestmark = pytest.mark.timeout(30)

MP = "multipart/form-data; boundary=XyZ"
UE = "application/x-www-form-urlencoded"


def mp(*parts: bytes, boundary: bytes = b"XyZ") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + boundary + b"--\r\n"


def field(name: bytes, value: bytes, extra: bytes = b"") -> bytes:
    return b"Content-Disposition: form-data; name=" + name + b"\r\n" + extra + b"\r\n" + value


MODEL = field(b'"model"', b"gpt-a")
FILE = (b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + b"\x00\r\n--Xy\r\n" * 50)


def model(ctype: str, body: bytes, complete: bool = True) -> str | None:
    f = body_model(ctype, body, complete)
    return None if f is None else f.value


def test_the_model_field_is_read_from_multipart_and_urlencoded_forms() -> None:
    assert model(MP, mp(MODEL, FILE)) == "gpt-a"
    assert model(MP, mp(FILE, field(b"model", b"gpt-a"))) == "gpt-a"  # a token name
    assert model('multipart/form-data; boundary="XyZ"', mp(MODEL)) == "gpt-a"
    assert model(MP, mp(field(b'"model"', b"gpt-a", b"Content-Type: text/plain; "
                              b"charset=utf-8\r\n"))) == "gpt-a"
    assert model(MP, mp(FILE)) is None  # a complete form without one: "no model"
    assert model(UE, b"x=1&model=gpt%2Da&y=a+b") == "gpt-a"
    assert model(UE, b"mod%65l=gpt+a") == "gpt a"  # (names are decoded too)
    assert model(UE, b"x=1") is None
    f = body_model(MP, mp(MODEL), True)
    assert f is not None and f.form  # never rewritten in place
    # JSON, and other types, as before
    assert model("application/json", b'{"model": "gpt-a"}') == "gpt-a"
    assert model("text/plain", mp(MODEL)) is None


def test_every_fragment_of_a_form_gives_its_model_or_a_refusal_never_another() -> None:
    for ctype, body in ((MP, mp(FILE[:40] + b"\r\n\r\nx", MODEL, FILE)),
                        (UE, b"a=1&model=gpt-a&b=2")):
        for cut in range(len(body)):
            try:
                got = model(ctype, body[:cut], False)
            except Unreadable:
                continue
            assert got == "gpt-a", (cut, got)
    # and read once its part has ended, whatever follows (an audio file past the window)
    body = mp(MODEL, FILE)
    end = body.index(b"gpt-a") + len(b"gpt-a\r\n--XyZ")
    assert all(model(MP, body[:cut], False) == "gpt-a" for cut in range(end, len(body)))
    with pytest.raises(Unreadable, match="peek window"):
        model(MP, mp(FILE, MODEL)[:200], False)  # not found before the window ends


@pytest.mark.parametrize(("ctype", "body", "match"), [
    (MP, mp(MODEL, FILE, field(b'"model"', b"gpt-b")), "more than one"),
    (UE, b"model=a&model=b", "more than one"),
    (MP, mp(field(b'"model"', b"gpt-a\r\n--XyZX")), "boundary line"),  # boundary in a value
    (MP, mp(MODEL).replace(b"form-data; name", b"form-data;\n name"), "bare CR or LF"),
    (MP, b"pre\n" + mp(MODEL), "preamble"),  # aiohttp, Werkzeug: a boundary after LF
    (MP, b"pre--XyZ\r\n" + mp(MODEL), "preamble"),  # Werkzeug: a boundary line
    (MP, b"pre\r\n--XyZ \r\n" + mp(MODEL), "boundary line"),  # aiohttp: a boundary line
    (MP, b"no boundary at all", "no boundary"),
    (MP, mp(MODEL).replace(b"--XyZ\r\n", b"--XyZ\n"), "boundary line"),  # a bare LF
    (MP, mp(MODEL)[:-11], "close delimiter"),  # never closed
    (MP, mp(field(b'"model"', b"gpt-a", b"X-Pad: " + b"a" * MAX_PART_HEAD + b"\r\n")),
     "head is longer"),
    (MP, mp(field(b'"model"', b"gpt-a", b" folded\r\n")), "folded"),
    (MP, mp(field(b'"mo\\"del"', b"gpt-a")), "escaped"),
    (MP, mp(field(b'"mo\\del"', b"gpt-a")), "escaped"),  # aiohttp, Werkzeug: model
    (MP, mp(field(b'"f"; filename="a\\\\"; x="1"', b"x"), MODEL), "escaped"),  # (see below)
    (MP, mp(field(b'"/model"', b"gpt-a")), "like 'model'"),  # aiohttp: model
    (MP, mp(b'Content-Disposition: form-data; name= "model"\r\n\r\ngpt-a'), "one way"),
    (MP, mp(b'Content-Disposition: form-data; name ="model"\r\n\r\ngpt-a'), "one way"),
    (MP, mp(b'Content-Disposition: form-data; name=model\t;x=1\r\n\r\ngpt-a'), "one way"),
    # Werkzeug: a boundary line after a bare LF or CR, or right after a part's head
    (MP, mp(field(b'"f"', b"x\n--XyZ\r\n" + MODEL), MODEL), "bare CR or LF"),
    (MP, mp(field(b'"f"', b"x\r--XyZ\r\n" + MODEL), MODEL), "bare CR or LF"),
    (MP, mp(field(b'"f"', b"--XyZ\r\n" + MODEL), MODEL), "bare CR or LF"),
    (MP, mp(field(b'"f"', b"\n--XyZ--"), MODEL), "bare CR or LF"),
    # aiohttp: a first line "--XyZ--x" is preamble, the parts after it read
    (MP, b"--XyZ--x\r\n" + mp(MODEL), "close delimiter is followed"),
    (MP, mp(MODEL)[:-2] + b" \r\n", "close delimiter is followed"),
    (MP, mp(field(b'"Model"', b"gpt-a")), "like 'model'"),
    (MP, mp(field(b'"model "', b"gpt-a")), "like 'model'"),
    (MP, mp(field(b"\"x\"; name*=utf-8''model", b"gpt-a")), "name\\*="),
    (MP, mp(field(b'"x"; name="model"', b"gpt-a")), "repeats"),
    (MP, mp(field(b'"model"; filename="m.txt"', b"gpt-a")), "file"),
    (MP, mp(field(b'"model"', b"Z3B0LWE=", b"Content-Transfer-Encoding: base64\r\n")),
     "Transfer-Encoding"),
    (MP, mp(field(b'"model"', b"gpt-a", b"Content-Type: text/plain; charset=utf-7\r\n")),
     "text/plain"),
    (MP, mp(field(b'"model"', b"gpt-a", b"Content-Disposition: form-data; name=x\r\n")),
     "more than one"),
    (MP, mp(field(b'"model"', b"\xff")), "UTF-8"),
    (MP, mp(field(b'"model"', b"m" * (MAX_MODEL + 1))), "longer"),
    (MP, mp(b'Content-Disposition: form-data; name="f"\r\n'
            b"Content-Type: multipart/mixed; boundary=in\r\n\r\n"
            b'--in\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-a\r\n--in--'),
     "itself multipart"),
    (MP, mp(b'Content-Disposition: attachment; name="model"\r\n\r\ngpt-a'), "form-data"),
    (UE, b"model=gpt%2", "percent escape"),
    (UE, b"Model=gpt-a", "like 'model'"),
    (UE, b"model=%ff", "UTF-8"),
    (UE, b"model=gpt-a\n", "raw"),  # aiohttp strips it: gpt-a
    (UE, b"x=1;model=gpt-a", "';'"),  # parse_qsl before 3.9.2 splits on ';'
    (UE, b"model=gpt-a;x=1", "';'"),  # gpt-a;x, or gpt-a
    (UE, b"x=1;model=gpt-b&model=gpt-a", "';'"),  # gpt-a, or twice
    (UE, b"x=1;Model=gpt-b&model=gpt-a", "';'"),
    (MP, mp(field(b"\"x\"; filename*=\"utf-8''a; name=model\"", b"gpt-b"), MODEL),
     "quoted filename"),  # aiohttp: no name; python-multipart: x
    (MP, mp(field(b"\"x\"; name*0=model", b"gpt-a")), "name\\*0="),  # aiohttp: model
    (MP, mp(field(b"\"x\"; filename*0=a.wav", b"gpt-a")), "filename\\*="),
    (MP, mp(field(b"\"model\"; filename*=utf-8''m.txt", b"gpt-a")), "file"),  # aiohttp: a file
    (UE, b"model=gpt a", "raw"),
])
def test_a_form_read_two_ways_is_refused(ctype: str, body: bytes, match: str) -> None:
    with pytest.raises(Unreadable, match=match) as exc:
        body_model(ctype, body, True)
    assert "'model'" in str(exc.value)


def test_a_repeated_model_is_ambiguous_and_an_unfinished_urlencoded_form_refused() -> None:
    with pytest.raises(Ambiguous):
        body_model(UE, b"model=a&model=a", True)
    with pytest.raises(Unreadable, match="peek window"):
        body_model(UE, b"model=gpt-a&x=" + b"1" * 100, False)


@pytest.mark.parametrize("ctype", [
    "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=a; "
    "boundary=b", "multipart/form-data; boundary*=utf-8''a", "multipart/form-data; boundary="
    + "b" * 71,
])
def test_a_multipart_type_without_one_boundary_is_refused(ctype: str) -> None:
    with pytest.raises(Unreadable, match="boundary"):
        body_model(ctype, mp(MODEL), True)


def test_form_kind() -> None:
    assert form_kind("Multipart/Form-Data; Boundary=XyZ") == ("multipart", "XyZ")
    assert form_kind("application/x-www-form-urlencoded; charset=utf-8") == ("urlencoded", None)
    assert form_kind("application/json") is None and form_kind(None) is None


@pytest.mark.parametrize(("ctype", "body"), [
    # a preamble (RFC 2046) before the first boundary line: aiohttp and Werkzeug skip it,
    # python-multipart refuses the body (so its server never serves a model from it)
    (MP, b"This is a multi-part message in MIME format.\r\n" + mp(MODEL, FILE)),
    (MP, b"\r\n\r\n" + mp(MODEL)),  # (CRLFs only: python-multipart too)
    (MP, b"a -- XyZ line\r\n" + mp(MODEL)),
    # filename*= (RFC 8187) on a file part: every reader reads its name from name=
    (MP, mp(MODEL, b"Content-Disposition: form-data; name=\"file\"; "
                   b"filename*=UTF-8''%C3%A9t%C3%A9.wav\r\n\r\nRIFF")),
    (MP, mp(b"Content-Disposition: form-data; filename*=UTF-8''a.wav; name=\"file\"; "
            b"filename=\"a.wav\"\r\n\r\nRIFF", MODEL)),
    # a backslash in a filename (a Windows path) not before a quote: its end, and the
    # part's name, the same to every reader (python-multipart reads "a\\"; x="1" on
    # past the quote, as one value: refused above)
    (MP, mp(b'Content-Disposition: form-data; name="file"; filename="C:\\dir\\a.wav"'
            b"\r\n\r\nRIFF", MODEL)),
    (MP, mp(MODEL)[:-2]),  # (the close delimiter at the very end)
    # `--boundary` in content after other bytes, and an empty value
    (MP, mp(field(b'"f"', b"x--XyZ\r\n-\n--XyY"), field(b'"e"', b""), MODEL)),
    # a raw ';' read the same whether or not a reader splits on it
    (UE, b"prompt=a;b&model=gpt-a"),
    (UE, b"model=gpt-a&x=1;y=2"),
    (UE, b"a;b=1&model=gpt-a"),
])
def test_a_rare_form_every_reader_reads_one_way_is_accepted(ctype: str, body: bytes) -> None:
    assert model(ctype, body) == "gpt-a"
    if ctype == MP:  # (and as it streams past the window)
        from gateway.dataplane.formscan import PartScanner
        scan = PartScanner(b"XyZ")
        scan.feed(body)
        assert scan.done or body.endswith(b"--XyZ--")  # (waits for what follows it)


def test_a_preamble_longer_than_the_window_is_refused() -> None:
    with pytest.raises(Unreadable, match="peek window"):
        body_model(MP, (b"x" * 100 + b"\r\n" + mp(MODEL))[:80], False)


def test_body_kind_names_what_the_model_was_read_from() -> None:
    from gateway.dataplane.formpeek import body_kind
    from gateway.dataplane.heldmodel import coding_refused
    assert body_kind(MP) == body_kind("multipart/form-data; boundary=a; boundary=b") \
        == "multipart form body"
    assert body_kind(UE + "; charset=utf-8", b"x=1") == "urlencoded form body"
    assert body_kind("application/json", b' {"a": 1}') == body_kind(None) == "JSON body"
    assert body_kind("application/octet-stream", b"\x00\x01") == (
        "body (not a JSON object or a form)")
    why = coding_refused({"content-type": "application/json; charset=latin-1"})
    assert why is not None and "the 'model' of a JSON body" in why
    why = coding_refused({"content-type": MP + "; charset=latin-1"})
    assert why is not None and "the 'model' of a multipart form body" in why


@pytest.mark.parametrize(("ctype", "body"), [
    ("application/x-www-form-urlencoded", b'{"model":"gpt-a"}'),
    ("application/x-www-form-urlencoded", b'\xef\xbb\xbf{"model":"gpt-a"}'),
    ("application/x-www-form-urlencoded; charset=utf-8", b'{"x":1}'),
    ("multipart/form-data; boundary=XyZ",
     b'{"model":"gpt-a"}\r\n--XyZ\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n'
     b'--XyZ--\r\n'),
    ("multipart/form-data; boundary=XyZ", b'\n {"model":"gpt-a"}\r\n--XyZ--\r\n'),
])
def test_a_form_body_that_begins_as_a_json_object_is_unreadable(ctype: str, body: bytes) -> None:
    """gin's ShouldBindJSON (Ollama) reads a body's first JSON value whatever its
    Content-Type: `curl -d` sends JSON as a form (review revplane)."""
    for complete in (True, False):
        with pytest.raises(Unreadable, match="Content-Type: application/json"):
            body_model(ctype, body, complete)
