"""dataplane/jsonpeek.py without sockets: the `model` field found on bytes, strictly."""

from __future__ import annotations

import json

import pytest

from gateway.dataplane.jsonpeek import Ambiguous, Unreadable, find_model, rewrite_model


def test_finds_the_top_level_model_and_its_byte_offsets() -> None:
    body = b'{"messages": [{"content": "h\xc3\xa9llo \xe6\x97\xa5"}], "model": "chat-small", "n": 1}'
    f = find_model(body)
    assert f is not None and f.value == "chat-small"
    assert body[f.start:f.end] == b'"chat-small"'  # bytes, not characters
    out = rewrite_model(body, f, "llama-\u00e9")
    assert json.loads(out) == {**json.loads(body), "model": "llama-\u00e9"}


@pytest.mark.parametrize("body", [
    b"", b"[1, 2]", b"not json", b"--boundary\r\nContent-Disposition: form-data", b"{}",
    b'{"messages": []}', b'{"model": 5}', b'{"nested": {"model": "x"}}',
])
def test_no_model(body: bytes) -> None:
    assert find_model(body) is None


def test_escaped_model_value_and_key() -> None:
    f = find_model(b'{"\\u006dodel": "chat\\u002dsmall"}')
    assert f is not None and f.value == "chat-small"


def test_duplicate_model_keys_are_ambiguous() -> None:
    with pytest.raises(Ambiguous):
        find_model(b'{"model": "a", "x": 1, "model": "b"}')
    with pytest.raises(Ambiguous):  # even when the first is not a string
        find_model(b'{"model": 1, "model": "b"}')


@pytest.mark.parametrize("body", [
    b'{"model": "chat-small\xff"}',            # invalid UTF-8 in the value
    b'{"messages": "\xc3\x28", "model": "a"}',  # invalid UTF-8 elsewhere, before it
    b'{"model": "\xed\xa0\x80"}',               # an encoded surrogate (not UTF-8)
    b'{"model": "chat-small\\udc80"}',         # an escaped lone surrogate
    b'{"model": "\\ud800x"}',
], ids=["bad-byte", "bad-before", "encoded-surrogate", "lone-low", "lone-high"])
def test_model_that_needs_non_utf8_is_unreadable(body: bytes) -> None:
    with pytest.raises(Unreadable):
        find_model(body)


def test_escaped_surrogate_pair_is_a_character() -> None:
    f = find_model(b'{"model": "m\\ud83d\\ude00"}')
    assert f is not None and f.value == "m\U0001F600"


def test_deep_nesting_is_unreadable_not_a_crash() -> None:
    deep = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b', "model": "a"}'
    with pytest.raises(Unreadable, match="nests too deeply"):
        find_model(deep)


def test_a_prefix_cut_inside_a_character_keeps_what_precedes() -> None:
    body = b'{"model": "a", "text": "\xe6\x97\xa5\xe6\x97\xa5"}'
    prefix = body[: body.index(b"\xa5")]  # cut inside the first character
    with pytest.raises(Unreadable, match="peek window"):
        find_model(prefix, complete=False)  # the object does not close in the window
    f = find_model(body)
    assert f is not None and f.value == "a"


def test_model_beyond_the_window_is_refused_not_missed() -> None:
    body = b'{"messages": "' + b"x" * 5000 + b'", "model": "chat-small"}'
    with pytest.raises(Unreadable, match="peek window"):
        find_model(body[:1024], complete=False)
    # a second model beyond the window: the first one is not trusted either
    two = b'{"model": "a", "pad": "' + b"x" * 5000 + b'", "model": "b"}'
    with pytest.raises(Unreadable, match="peek window"):
        find_model(two[:1024], complete=False)
    # the whole object inside the window: fine, whatever follows it
    f = find_model(b'{"model": "a"}   ' + b" " * 2000, complete=False)
    assert f is not None and f.value == "a"


def test_fragmented_prefixes_never_yield_a_wrong_offset() -> None:
    """Every prefix of a body either refuses or finds the value at the right bytes."""
    body = '{"msg": "h\u00e9\u65e5\U0001F600", "model": "m\u00e9", "z": [1, {"a": 2}]}'.encode()
    for n in range(len(body) + 1):
        try:
            f = find_model(body[:n], complete=n == len(body))
        except Unreadable:
            assert n < len(body)
            continue
        if f is not None:
            assert json.loads(body[f.start:f.end]) == f.value == "m\u00e9"
    assert find_model(body) is not None


_OBJ = {"model": "gpt-a", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("body", [
    b"\xef\xbb\xbf" + json.dumps(_OBJ).encode(),
    json.dumps(_OBJ).encode("utf-16"),  # with its BOM
    json.dumps(_OBJ).encode("utf-16-le"),
    json.dumps(_OBJ).encode("utf-16-be"),
    " \n".encode("utf-16-le") + json.dumps(_OBJ).encode("utf-16-le"),
    json.dumps(_OBJ).encode("utf-32"),
    json.dumps(_OBJ).encode("utf-32-le"),
    json.dumps(_OBJ).encode("utf-32-be"),
    (" " * 40 + json.dumps(_OBJ)).encode("utf-16-le"),  # (past the 64 bytes a first fix read)
    (" " * 20 + json.dumps(_OBJ)).encode("utf-32-be"),
    b"\xef\xbb\xbf" + b" " * 70 + json.dumps(_OBJ).encode(),
    b"\xef\xbb\xbf" + b"\n" * 70 + json.dumps(_OBJ).encode(),
], ids=["utf8-bom", "utf16", "utf16le", "utf16be", "utf16le-ws", "utf32", "utf32le", "utf32be",
        "utf16le-40-spaces", "utf32be-20-spaces", "bom-70-spaces", "bom-70-newlines"])
@pytest.mark.parametrize("complete", [True, False])
def test_json_a_backend_reads_in_another_encoding_is_unreadable(body: bytes,
                                                                complete: bool) -> None:
    """Python's json.loads(bytes) (Starlette, so most OpenAI-compatible servers) reads these
    as `model: gpt-a`; to strict UTF-8 they are no object at all, which routed them as if they
    had no model."""
    assert json.loads(body)["model"] == "gpt-a"
    with pytest.raises(Unreadable, match="UTF-16 or UTF-32"):
        find_model(body, complete)


def test_whitespace_filling_the_window_is_unreadable_not_no_model() -> None:
    body = b" " * 2048 + json.dumps(_OBJ).encode()
    with pytest.raises(Unreadable, match="starts past"):
        find_model(body[:1024], complete=False)
    f = find_model(body)  # the whole body: read as it is
    assert f is not None and f.value == "gpt-a"


@pytest.mark.parametrize("body", [
    b"\x00\x01\x02\x03binary tensor", b"\xff\xd8\xff\xe0 a jpeg", b"\xef\xbf\xbd{}",
    "\u00e9t\u00e9".encode(), b"[1, 2]",
])
def test_bodies_that_are_no_json_object_in_any_encoding_have_no_model(body: bytes) -> None:
    assert find_model(body) is None
    assert find_model(body, complete=False) is None


@pytest.mark.parametrize("before", [
    b'"n": 1' + b"0" * 5000,                      # Python's int() refuses > 4300 digits
    b'"ids": [1, 2, 3' + b"0" * 5000 + b"]",
    b'"opts": {"seed": -9' + b"9" * 5000 + b"}",
])
def test_a_huge_integer_before_the_model_does_not_hide_it(before: bytes) -> None:
    """A JSON integer of more than 4300 digits is valid JSON, and backends outside Python
    (serde, Go, C++ readers) read past it to `model`; Python's json refused it (its
    int-from-string limit) and the body was taken for one with no `model`: routed by the
    routes that match no model (a catch-all), it reached a backend that serves the model
    a route matched by model (killed, say) holds."""
    body = b'{' + before + b', "model": "chat-small"}'
    f = find_model(body)
    assert f is not None and f.value == "chat-small"
    assert body[f.start:f.end] == b'"chat-small"'
    assert find_model(b'{"model": 1' + b"0" * 5000 + b"}") is None  # (a number: no model)


@pytest.mark.parametrize("body", [
    b'{"seed": 1, /* a comment */ "model": "gpt-a"}',      # JSON5 / lenient readers
    b'{"messages": [1, 2,], "model": "gpt-a"}',             # a trailing comma
    b'{"prompt": "a\tb", "model": "gpt-a"}',                # a raw control character
    b'{"n": 01, "model": "gpt-a"}',                         # a leading zero
    b"{'model': 'gpt-a'}",                                  # single quotes
    b'{"model": "gpt-a" "n": 1}',                           # a missing comma after it
    b'{"prompt": "x"',                                      # cut short
])
def test_a_body_that_begins_as_an_object_and_is_not_json_is_unreadable(body: bytes) -> None:
    """Routed as "no model" before: a killed model's request reached a catch-all route
    whose backend reads JSON leniently and found the `model` routing did not."""
    with pytest.raises(Unreadable, match="not valid JSON"):
        find_model(body)


@pytest.mark.parametrize("body", [
    b'{"model": "gpt-a",}',                                 # a trailing comma, top level
    b'{"n": 1 ,\n}',
    b'{"n": 1} {"model": "gpt-a"}',                         # a second value after it
    b'{"model": "gpt-a"}x',
])
def test_a_top_level_trailing_comma_or_a_value_after_the_object_is_unreadable(
        body: bytes) -> None:
    """README: a body that begins as a JSON object and is not valid JSON is refused; the
    top level's own trailing comma, and bytes after its closing brace, were taken as JSON."""
    with pytest.raises(Unreadable, match="not valid JSON"):
        find_model(body)


def test_whitespace_after_the_object_is_json() -> None:
    f = find_model(b'{"model": "gpt-a"}\r\n \t')
    assert f is not None and f.value == "gpt-a"
    assert find_model(b"{}\n") is None and find_model(b"{ }") is None


@pytest.mark.parametrize("body", [
    b'{"Model": "a"}', b'{"MODEL": "a", "x": 1}', b'{"model": "a", "mOdEl": "b"}',
    b'{"x": {"model": 1}, "modeL": "b"}', b'{"mod\\u0045l": "a"}',
])
def test_a_model_key_in_another_case_is_ambiguous(body: bytes) -> None:
    """Go's encoding/json and .NET's web defaults read `Model` as `model` (review revplane)."""
    with pytest.raises(Ambiguous, match="reads as 'model'"):
        find_model(body)


@pytest.mark.parametrize("body", [
    b'{"models": "a"}', b'{"mode": "a", "model": "b"}', b'{"x": {"Model": "a"}, "model": "b"}',
    b'{"mod\\u0131l": "a", "model": "b"}', b'{1: "a", "model": "b"}', b'{12345: 1, "model": "b"}',
])
def test_other_keys_are_not_model(body: bytes) -> None:
    f = find_model(body)
    assert f is None or f.value == "b"
