"""Find and rewrite the top-level `model` field of an OpenAI-style JSON body, cheaply.

Pure: works on bytes already read (a bounded prefix of the body), never parses more
than the top-level members it must walk. Decoding is strict UTF-8 (RFC 8259) and every
offset is a byte offset, so a rewrite lands exactly on the value routing read. Whatever a
backend could read differently from us is refused (`Unreadable`, `Ambiguous`), never
guessed at: duplicate top-level `model` keys (or one in another case, `Model`: Go's
and .NET's readers match names in any case), invalid UTF-8, a `model` string holding a
lone surrogate escape, nesting too deep to decode, and a body whose top-level members run
past the peek window (a `model`, or a second one, could hide beyond it).
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass

__all__ = ["Ambiguous", "ModelField", "Unreadable", "find_model", "rewrite_model"]

_decoder = json.JSONDecoder()
# Python's int() refuses a string of more than 4300 digits (a ValueError, which read as "not
# JSON", so "no model"); other JSON readers take it. A body that has one is walked again
# with integers read as floats (linear; no value but `model`'s, a string, is used): only
# then, as a C call per integer costs 3 times what the default reading does.
_LONG_INTS = json.JSONDecoder(parse_int=float)
_INT_LIMIT = "integer string conversion"
_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BOM_FIRST = (b"\xef", b"\xfe", b"\xff")  # the first bytes of the UTF-8, -16 and -32 BOMs
# (`0 in body[:4]`: a NUL byte, tested as an int: `b"\x00" in` costs a TypeError formatted
# and dropped by `bytes.__contains__`, which tries an int first: ~2,000 CPU instructions)


#: a top-level key that is `model` in another case: Go's encoding/json (Ollama, LocalAI) and
#: ASP.NET Core's web defaults match JSON names in any case (Go: the last of two wins), so
#: such a backend reads a `model` routing never saw (ASCII only: no other letter folds to
#: one of `model`'s there)
_CASED = ("the body's top-level %r reads as 'model' to backends that match JSON names in "
          "any case (Go, .NET); send it as 'model', once")


class Unreadable(ValueError):
    """The body's `model` cannot be read the one way every backend would read it."""


class Ambiguous(Unreadable):
    """The body names `model` more than once."""


@dataclass(frozen=True, slots=True)
class ModelField:
    value: str
    start: int  # byte offsets of the JSON value (including its quotes)
    end: int
    form: bool = False  # a form field (formpeek.py): never rewritten in place


def _text(body: bytes, complete: bool) -> str:
    """Strict UTF-8; a prefix cut inside a character keeps the characters before it."""
    try:
        if complete:
            return body.decode("utf-8")
        return codecs.getincrementaldecoder("utf-8")("strict").decode(body, final=False)
    except UnicodeDecodeError as exc:
        raise Unreadable(f"the body is not valid UTF-8 (byte {exc.start})") from None


def find_model(body: bytes, complete: bool = True) -> ModelField | None:
    """The top-level string `model` of a JSON object body, or None when the body is not a
    JSON object or has no top-level `model`.

    `complete` says whether `body` is the whole body (else a prefix: the peek window). A
    prefix whose top-level object does not close inside it raises `Unreadable`.
    """
    if (0 in body[:4] or body[:1] in _BOM_FIRST) and _other_encoding(body):
        raise Unreadable("the body is JSON in UTF-16 or UTF-32, or begins with a byte "
                         "order mark; send it as UTF-8 without one (RFC 8259)")
    i = len(body) - len(body.lstrip(b" \t\r\n"))
    if body[i:i + 1] != b"{":
        if i == len(body) and not complete:
            raise Unreadable("the body's first JSON value starts past the gateway's peek "
                             "window (server.model_peek_bytes), so its 'model' cannot be "
                             "checked; send it without the leading whitespace")
        return None  # not a JSON object (form data, a tensor in binary, ...): no model
    text = _text(body, complete)
    dec = _decoder
    closed = False
    while True:
        found: tuple[str, int, int] | None = None
        seen = False  # a `model` key, of any type
        closed = False
        try:
            i = _WS.match(text, 0).end() + 1  # type: ignore[union-attr]
            first = True
            while True:
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text[i] == "}":
                    closed = first  # (after a comma: `{"a": 1,}`, a trailing comma)
                    break
                first = False
                key, i = dec.raw_decode(text, i)
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text[i] != ":":
                    break
                i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
                start = i
                value, i = dec.raw_decode(text, i)
                if key == "model":
                    if seen:
                        raise Ambiguous("the body has more than one top-level 'model' field")
                    seen = True
                    if isinstance(value, str):
                        found = (value, start, i)
                elif type(key) is str and len(key) == 5 and key.lower() == "model":
                    raise Ambiguous(_CASED % key)
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text[i] == ",":
                    i += 1
                    continue
                closed = text[i] == "}"
                break
        except RecursionError:
            raise Unreadable("the body nests too deeply to be read") from None
        except (ValueError, IndexError) as exc:
            if isinstance(exc, Unreadable):
                raise
            if dec is _decoder and _INT_LIMIT in str(exc):
                dec = _LONG_INTS  # (a huge integer: walked again)
                continue
            # Not JSON (below), or cut at the peek window (below).
        break
    if closed and _WS.fullmatch(text, i + 1) is None:
        closed = False  # something after the object (`{...} {"model": ...}`): not JSON
    if not closed and complete:
        # it begins as an object and is not JSON: a lenient reader (comments, trailing
        # commas, raw control characters, JSON5) may find a `model` there that routing did
        # not, and a killed model's request would go on by another route (a catch-all)
        raise Unreadable("the body begins as a JSON object but is not valid JSON (RFC 8259), "
                         "so its 'model' cannot be checked")
    if not closed:
        raise Unreadable("the body's top-level fields run past the gateway's peek window "
                         "(server.model_peek_bytes), so its 'model' cannot be checked; send a "
                         "smaller body or raise the window")
    if found is None:
        return None
    value, s, e = found
    if _SURROGATE.search(value):
        raise Unreadable("the body's 'model' holds an escaped lone surrogate, which is not a "
                         "Unicode character")
    if text.isascii():
        return ModelField(value, s, e)
    return ModelField(value, len(text[:s].encode()), len(text[:e].encode()))


def _other_encoding(body: bytes) -> bool:
    """Whether a backend's JSON reader could read `body` as a JSON object where we see none:
    Python's `json.loads(bytes)` (Starlette's `Request.json()`, so most OpenAI-compatible
    servers) takes UTF-8 after a byte order mark, and UTF-16 and UTF-32, which it tells
    from the NUL bytes of the first characters."""
    encoding = json.detect_encoding(body[:4])
    if encoding == "utf-8":
        return False
    try:  # (all of it: whitespace before the object may be as long as the window)
        text = codecs.getincrementaldecoder(encoding)("strict").decode(body, final=False)
    except UnicodeDecodeError:
        return False
    return text.lstrip(" \t\r\n\ufeff")[:1] in ("{", "")


def rewrite_model(body: bytes, field: ModelField, new: str) -> bytes:
    return body[: field.start] + json.dumps(new).encode() + body[field.end :]
