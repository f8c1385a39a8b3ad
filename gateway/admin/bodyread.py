"""The admin request's body as bytes: read once, taken whole when it came with the head,
decoded from its Content-Encoding by the handler that reads it (admin/inputs.py's
`json_body` reads it; the Idempotency-Key's fingerprint, admin/idemkeys.py, reads it
again through `decoded_body`).
"""

from __future__ import annotations

import zlib

from aiohttp import web

from gateway.domain.audit import clean_text
from gateway.errors import ApiError

__all__ = ["BODY_TIMEOUT", "DEFAULT_BODY_TIMEOUT", "MAX_BODY", "arrived", "bad",
           "decoded", "decoded_body"]

#: how long a request body may take to arrive, whole (the config's server.body_timeout)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
DEFAULT_BODY_TIMEOUT = 30.0
#: the largest body, decoded (admin.max_body_size; the listener caps the bytes as sent)
MAX_BODY = web.AppKey("max_body", int)
DEFAULT_MAX_BODY = 64 * 1024


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


#: the body as read by `json_body` when it came whole with the head (`arrived`), for
#: `decoded_body` (the Idempotency-Key's fingerprint): read from the stream, not through
#: `request.read()`, which would give it once only
_ARRIVED = web.RequestKey("killgate.body_arrived", bytes)


def arrived(request: web.Request) -> bytes | None:
    """The body, when all of it came with the head and nothing read it yet (a kill's
    does): taken from the stream as it is, without `request.read()`'s coroutines (two
    reads of the stream, a buffer copied twice: ~10k instructions before the commit), with
    its size capped as `request.read()` caps it (413). None: read it with `request.read()`
    (a body still arriving, one read already, an empty one)."""
    content = request.content
    if not content.is_eof() or content.at_eof():
        return None
    raw = content.read_nowait()
    cap = request.client_max_size
    if cap and len(raw) > cap:
        raise web.HTTPRequestEntityTooLarge(cap)
    request[_ARRIVED] = raw
    return raw


async def decoded_body(request: web.Request) -> bytes:
    """The body as its sender meant it (decoded from gzip or deflate), read whole: what an
    Idempotency-Key's fingerprint is taken over (gzip's header holds the time it was
    made, so the same request compressed again differs as sent). Call after `json_body`,
    which read it under the body deadline and refused what cannot be decoded."""
    raw = request.get(_ARRIVED)
    return decoded(request, raw if raw is not None else await request.read())


def decoded(request: web.Request, raw: bytes) -> bytes:
    """The body decoded from its Content-Encoding (gzip or deflate), at most MAX_BODY
    bytes of it. Done here, by the handler that reads the body after the token check:
    the listener decodes nothing (`auto_decompress` off), since it decoded every body as
    it arrived, read or not: a megabyte of gzip sent without a token cost the event loop
    a second, decoding a gigabyte of zeros nobody would read."""
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding in ("gzip", "x-gzip"):
        wbits = 31
    elif coding == "deflate":  # zlib-wrapped, or raw from some clients (as aiohttp reads it)
        wbits = 15 if raw[:1] and raw[0] & 0x0F == 8 else -15
    else:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Encoding {clean_text(coding, 32)!r} is not supported: send "
                       "the body as it is, or gzip or deflate")
    limit = request.config_dict.get(MAX_BODY, DEFAULT_MAX_BODY)
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error:
        out = b""
    else:
        if len(out) > limit:
            raise ApiError(413, "body_too_large", "the admin request body is too large")
        if d.eof and not d.unused_data:
            return out
    raise bad("the body cannot be read: it is not what its Content-Encoding says")
