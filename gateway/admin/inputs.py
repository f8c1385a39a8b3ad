"""Reading what an admin caller sent: JSON bodies, query values, request ids, reasons.

Owns the rule that bad input is a 400 naming what was wrong, never a 500: bodies must be
sent as `Content-Type: application/json` (else 415: a cross-site page can send a
`text/plain` form or `no-cors` fetch without a preflight, never this type, so a session a
proxy signs in cannot be made to act from another origin) and be one JSON object of valid
Unicode (no lone surrogates, no NaN), nested at most MAX_DEPTH
deep, with only the allowed fields; query values are checked against their grammar
before anything reads the store; `x-request-id` is printable ASCII. Imports only the
foundations, aiohttp's request type and admin/bodyread.py (the body as bytes).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from typing import Any

from aiohttp import web

from gateway.admin.bodyread import (
    BODY_TIMEOUT,
    DEFAULT_BODY_TIMEOUT,
    MAX_BODY,
    arrived,
    bad,
    decoded,
    decoded_body,
)
from gateway.config import parse_duration
from gateway.domain.audit import clean_text
from gateway.errors import ApiError

__all__ = [
    "BODY_TIMEOUT",
    "MAX_BODY",
    "MAX_DEPTH",
    "MAX_WAIT",
    "decoded_body",
    "json_body",
    "query_int",
    "query_text",
    "reason",
    "request_id",
    "valid_text",
    "wait",
]

MAX_DEPTH = 8  # {"weights": {...}}: 2 levels; Alertmanager's {"alerts": [{"labels": {}}]}: 4
MAX_WAIT = 30.0
MAX_REASON = 1024
_REQUEST_ID = re.compile(r"[!-~]{1,128}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check(value: Any, depth: int, where: str) -> None:
    """Every string valid Unicode, nesting bounded (iteratively bounded by `depth`)."""
    if depth > MAX_DEPTH:
        raise bad(f"the body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        valid_text(value, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            valid_text(k, where)
            _check(v, depth + 1, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check(v, depth + 1, f"{where}[{i}]")


def _plainly_valid(text: str) -> bool:
    """Whether the JSON `text` (decoded from UTF-8: no surrogate in it) can hold neither a
    lone surrogate nor nesting past MAX_DEPTH, read off the text in C: a surrogate comes
    only from a \\uD800-\\uDFFF escape, and a value sits in no more containers than the
    text opens brackets (those inside strings count too: never too few); `_check` refuses
    a value inside MAX_DEPTH of them. A kill's body is so: its walk by `_check` was ~12k
    instructions before its commit leaves (callgrind)."""
    return ("\\ud" not in text and "\\uD" not in text
            and text.count("{") + text.count("[") < MAX_DEPTH)


def valid_text(s: str, where: str = "") -> str:
    """`s` unless it holds a lone surrogate (JSON's \\ud800 escapes): such a string cannot
    be stored, logged or hashed as UTF-8."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(f"{where or 'a value'} is not valid Unicode (a lone surrogate escape)") from None
    return s


class _TwiceNamed(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are unique (RFC 8259 §4 "SHOULD"): `{"weights": {"v1": 50,
    "v1": 60}}` took the last silently (a script's bug sent v1's traffic where it did not
    mean to), and a proxy or WAF that reads the first value saw another request."""
    out = dict(pairs)
    if len(out) == len(pairs):  # (built and checked in C: a loop was ~3k instructions)
        return out
    seen: set[str] = set()
    for k, _ in pairs:  # (the first name given twice, as the loop before said)
        if k in seen:
            raise _TwiceNamed(k)
        seen.add(k)
    raise AssertionError("unreachable: fewer names than pairs means one given twice")


#: `json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique)`'s decoder,
#: made once: json.loads builds a JSONDecoder and its C scanner at every call given a
#: keyword (before every admin write's commit; callgrind: see the commit)
_DECODER = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_unique)


def _loads(text: str) -> Any:
    """json.loads with those keywords: the same value or the same error."""
    if text.startswith("\ufeff"):  # (json.loads's own check, word for word)
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


async def json_body(request: web.Request,
                    allowed: frozenset[str] | None) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` fields (None: any field)."""
    # (the header as every client sends it needs no parse: `content_type` is then itself)
    if request.headers.get("Content-Type") != "application/json" and \
            request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       "the body must be sent with Content-Type: application/json")
    cap = request.client_max_size
    if cap and (request.content_length or 0) > cap:
        # (refused before it is read, as one read over the cap is: read, a body sent
        # slowly or not at all waited for body_timeout and was answered 408)
        raise web.HTTPRequestEntityTooLarge(cap, request.content_length or 0)
    limit = DEFAULT_BODY_TIMEOUT
    try:
        raw = arrived(request)
        if raw is None and request.content.is_eof():
            raw = await request.read()  # (read already, or empty: it cannot wait)
        elif raw is None:
            limit = request.config_dict.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT)
            async with asyncio.timeout(limit):
                raw = await request.read()
    except TimeoutError:
        # (a body dribbled, or never sent after its head: the handler would wait on it,
        # holding one of the listener's connections, for as long as the caller likes)
        raise ApiError(408, "body_timeout",
                       f"the request body did not arrive within {limit:g}s "
                       "(server.body_timeout)") from None
    except ConnectionResetError:  # (the caller went away mid-body: its fault, not ours)
        raise bad("the connection closed before the whole body arrived") from None
    raw = decoded(request, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        body = _loads(text.removeprefix("\ufeff"))
    except RecursionError:
        raise bad(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except _TwiceNamed as exc:
        raise bad(f"the body names {clean_text(exc.key, 64)!r} twice in one object (which "
                  "one was meant? a reader before killgate may have taken the other): name "
                  "each once") from None
    except json.JSONDecodeError as exc:  # (say where: a trailing comma is not "not an object")
        raise bad(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                  f"{exc.colno}") from None
    except ValueError as exc:  # NaN / Infinity, or an integer of thousands of digits
        why = str(exc) if "JSON number" in str(exc) else "a number with too many digits"
        raise bad(f"the body is not valid JSON: {why}") from None
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object")
    if not _plainly_valid(text):
        _check(body, 1, "")
    if allowed is None:
        return body
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad(f"unknown field(s): {', '.join(clean_text(u, 64) for u in unknown[:10])}; "
                  f"allowed: {', '.join(sorted(allowed))}")
    return body


def reason(body: dict[str, Any], required: bool = True, default: str = "") -> str:
    value = body.get("reason")
    if value is None and not required:
        return default
    if not isinstance(value, str) or not value.strip():
        raise bad("'reason' is required and must be a non-empty string")
    if len(value) > MAX_REASON:
        raise bad(f"'reason' is longer than {MAX_REASON} characters")
    return clean_text(value.strip(), MAX_REASON)


def _single(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad(f"{name} is given {len(values)} times; give it once")
    if not values:
        return None
    return valid_text(values[0], name)


@functools.lru_cache(maxsize=32)
def _duration(raw: str) -> float:
    """parse_duration, its answers kept for the last few values (a client sends the same
    `wait` on every write: ~2k instructions a kill before its commit leaves)."""
    return parse_duration(raw)


def wait(request: web.Request) -> float:
    raw = _single(request, "wait")
    if raw is None:
        return 1.0
    try:
        value = _duration(raw)
    except ValueError:
        raise bad(f"wait={clean_text(raw, 32)!r} is not a duration such as 1s") from None
    if value > MAX_WAIT:
        raise bad(f"wait must be at most {MAX_WAIT:g}s")
    return value


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _single(request, name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise bad(f"{name} must be an integer between {low} and {high}")
    value = int(raw)
    if not low <= value <= high:
        raise bad(f"{name} must be between {low} and {high}")
    return value


def query_text(request: web.Request, name: str, pattern: str, what: str) -> str | None:
    raw = _single(request, name)
    if raw is not None and not re.fullmatch(pattern, raw):
        raise bad(f"{name} must be {what}")
    return raw


def request_id(request: web.Request, fallback: str) -> str:
    """The caller's `x-request-id` (1-128 printable ASCII characters), else `fallback`."""
    values = request.headers.getall("x-request-id", [])
    if not values:
        return fallback
    if len(values) > 1 or not _REQUEST_ID.fullmatch(values[0]):
        raise bad("x-request-id must be one value of 1-128 printable ASCII characters")
    return values[0]
