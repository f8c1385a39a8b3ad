"""The body's `model` read from what the gateway holds of a request, for a version that
rewrites it when the request was not peeked at for it.

A request on a route chosen by path, Host and header fields has its body read for its
`model` only when the version chosen for it rewrites the field (`modelpeek.py`); one that
went to a version that rewrites nothing streamed as it came. When it later moves to a
version that does rewrite (failover, a kill since routing) or is copied to a shadow that
does, its `model` is read here from the bytes in memory (a body kept whole, or its first
bytes), with the same refusals as a peek (another charset, a Content-Encoding, JSON the
backend could read differently). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.dataplane.formpeek import body_kind, body_model
from gateway.dataplane.headers import declared_charset
from gateway.dataplane.jsonpeek import ModelField, Unreadable

__all__ = ["FORM_NOT_REWRITTEN", "coding_refused", "held_model"]

FORM_NOT_REWRITTEN = ("the body is a form (multipart/form-data or x-www-form-urlencoded) "
                      "whose 'model' field the gateway cannot rewrite for a version that "
                      "sets 'model'; send it as JSON, or route it to a version without "
                      "'model'")

_UTF8 = ("utf-8", "utf8")


def coding_refused(headers: Mapping[str, str]) -> str | None:
    """Why a body's `model` cannot be read as sent (its charset, its Content-Encoding), or
    None when it can be."""
    ctype = headers.get("content-type")
    charset = declared_charset(ctype)
    if charset is not None and charset not in _UTF8:
        return (f"the body is declared {charset!r}; the 'model' of a {body_kind(ctype)} (read "
                "to route by it, or to rewrite it for a version's 'model') is read in UTF-8 "
                "only")
    if not _utf8_only(ctype):
        return ("the body's Content-Type names its charset more than once or in another "
                "form than 'charset=utf-8' (a backend may read another: aiohttp takes the "
                "last, and RFC 2231's charset*=); send one 'charset=utf-8', or none")
    coding = headers.get("content-encoding")
    if coding is not None and coding.strip(" \t").lower() not in ("", "identity"):
        # (its `model` is not in the bytes as they came, and a backend that decodes
        # request bodies, aiohttp's server does, reads one: a catch-all's, say)
        return ("the body has a Content-Encoding; the body's 'model' (read to route by it, "
                "or to rewrite it for a version's 'model') is read in an uncompressed body "
                "only")
    return None



def _utf8_only(ctype: str | None) -> bool:
    """Whether every mention of `charset` in a Content-Type is a parameter `charset=utf-8`
    (any case, quoted or not): none that a backend's reader could take for another (a
    second `charset` parameter, whose last aiohttp's `Request.charset` reads; an RFC 2231
    `charset*=utf-8''utf-7` or `charset*0=`, which it decodes), so the body it decodes is
    the UTF-8 whose `model` routing read."""
    low = ctype.lower() if ctype else ""
    if "charset" not in low:
        return True
    plain = 0
    for param in low.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') in _UTF8:
            plain += 1
    return plain == low.count("charset") <= 1


def held_model(headers: Mapping[str, str], held: bytes, complete: bool,
               window: int) -> ModelField | None:
    """The `model` of a body of which `held` is in memory (all of it when `complete`; else
    its first bytes), read in its first `window` bytes (server.model_peek_bytes) exactly as
    a peek reads it, or None when it has none. Raises `Unreadable` when it cannot be read
    the one way a backend would (or is not held). (Read whole, a body of max_body_size held
    the loop, every connection, ~0.5 s per 7 MB of JSON, at each failover or copy.)"""
    why = coding_refused(headers)
    if why is not None:
        raise Unreadable(why)
    if not held and not complete:
        raise Unreadable("the body streamed to its backend as it came: none of it is held")
    field = body_model(headers.get("content-type"), held[:window],
                       complete and len(held) <= window)
    if field is not None and field.form:
        raise Unreadable(FORM_NOT_REWRITTEN)
    return field
