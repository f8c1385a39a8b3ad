"""A backend's Location as the client should read it: a URL on the backend made relative.

Owns the rule of nginx's `proxy_redirect default`: a URL the backend built from the Host
we sent it (its own address: a trailing-slash redirect, say) becomes a path on the
gateway, so the client follows it to the gateway and never learns the backend's address;
the version's base path is matched up to percent-encoding (RFC 3986 §6.2.2). Never a
path another host could be read from: such a URL, and any other, passes as it came.
Pure, linear in the value's length.
"""

from __future__ import annotations

__all__ = ["local_location"]

_CONTROLS = bytes(range(0x20)) + b"\x7f"  # (URL parsers drop tabs and line breaks anywhere)


def local_location(url: bytes, origins: tuple[bytes, ...], base: bytes) -> bytes | None:
    """`url` as a path on the gateway when it begins with the version's own URL (one of
    `origins`, lower case: scheme, host and port as we address the backend, with and
    without a default port; then its `base` path), else None. Never a path another host
    could be read from (`//host`, `/\\host`): such a URL passes as it came."""
    url = url.rstrip(b" \t")  # (llhttp keeps a value's trailing whitespace)
    low = url.lower()
    for origin in origins:
        if low.startswith(origin):
            rest = url[len(origin):]
            break
    else:
        return None
    if base:
        if rest[:len(base)] == base:
            rest = rest[len(base):]
        else:
            after = _after_base(rest, base)
            if after is None:
                return None
            rest = after
    # a path that begins with one "/" stays on the gateway's host whatever follows (a browser
    # escapes what it must); "//host", "/\\host", or a control character anywhere ("/\t/host"
    # reads as "//host") could name another: such a URL passes as it came. (Linear: a
    # backend's value must not cost the event loop more than its length.)
    if rest[:1] not in (b"", b"/", b"?", b"#") or rest[:2] in (b"//", b"/\\") \
            or len(rest.translate(None, _CONTROLS)) != len(rest):
        return None
    return rest if rest[:1] == b"/" else b"/" + rest


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789ABCDEFabcdef")


def _unit(path: bytes, start: int) -> tuple[bytes, int]:
    """The path's unit at `start` in the form RFC 3986 §6.2.2 compares (an escape of an
    unreserved character decoded, any other escape's hex upper case) and where the next
    begins."""
    if path[start] == 0x25 and start + 2 < len(path) and path[start + 1] in _HEX \
            and path[start + 2] in _HEX:
        byte = int(path[start + 1:start + 3], 16)
        if byte in _UNRESERVED:
            return bytes((byte,)), start + 3
        return path[start:start + 3].upper(), start + 3
    return path[start:start + 1], start + 1


def _after_base(rest: bytes, base: bytes) -> bytes | None:
    """What follows `base` in `rest` when the two spell its first segments alike up to
    percent-encoding (`/api%2Dv1` is `/api-v1`; `%7e` is `%7E`), else None. Linear in
    `base`: the walk stops at its end or at the first unit that differs."""
    i = j = 0
    while j < len(base):
        if i >= len(rest):
            return None
        want, j = _unit(base, j)
        got, i = _unit(rest, i)
        if got != want:
            return None
    return rest[i:]
