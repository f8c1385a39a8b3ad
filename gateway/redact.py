"""Secrets out of everything a reader sees: API answers, log lines, CLI tables.

Owns the redaction rules (CONTRACT §5.2): a URL keeps its scheme and host but never its
userinfo (`redis://:pw@h` -> `redis://***@h`), nor the value of a query parameter named
like a secret (`?password=`, `?token=`); a URL under a key that names a webhook, JWKS or
other callback keeps only its scheme and host (their path and query are the secret:
Slack-style hook URLs). A string under a key named like a secret (password, token, key,
authorization, ...) is replaced whole; names of environment variables and files that
hold secrets (`*_env`, `*_file`) are not secrets. Pure; foundations only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "message", "text", "tree", "url"]

MASK = "***"
_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|credential"
                         r"|private|signature|authorization|cookie|^key$|_key$|^auth$", re.I)
_NOT_SECRET = re.compile(r"(_env|_file|_path|_ttl|_age|_lifetime|_interval|_timeout|_size"
                         r"|_rate|_burst|_header)$", re.I)
_HIDE_PATH = re.compile(r"webhook|hook|jwks|callback|notify", re.I)
# userinfo runs to the authority's last `@`, as urllib (and so the redis client) reads
# it: a password holding a raw `@` is hidden whole. A scheme is at most 32 characters: an
# unbounded one was tried from every word boundary to the end of a long `a.a.a...` run
# (quadratic: 16 KB of text cost 1.2 s)
_URL = re.compile(r"\b([a-z][a-z0-9+.\-]{0,31}://)([^/?#\s]*@)?([^/?#\s]*)([^\s\"'<>]*)",
                  re.I)
_PARAM = re.compile(r"([?&;])([^=&;#]+)=([^&;#]*)")


def _secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET.search(key)


def url(value: str, hide_path: bool = False) -> str:
    """One URL, redacted: no userinfo, no secret query values; no path or query at all
    when `hide_path` (a webhook's or key set's)."""
    m = _URL.match(value.strip())
    if m is None:
        return value
    scheme, userinfo, host, rest = m.groups()
    out = scheme + (MASK + "@" if userinfo else "") + host
    if hide_path:
        return out + ("/" + MASK if rest.strip("/") else "")
    return out + _PARAM.sub(
        lambda p: f"{p.group(1)}{p.group(2)}={MASK}" if _secret_key(p.group(2)) else p.group(0),
        rest)


def text(value: str, hide_path: bool = False) -> str:
    """Every URL inside free text (an error message) redacted as `url` does."""
    if "://" not in value:
        return value
    return _URL.sub(lambda m: url(m.group(0), hide_path), value)


# In free text written by others (a library's log message, an exception): header lines
# whose whole value is the secret, `name: value` / `name=value` pairs whose name is a
# secret's (a value runs to a space, quote, separator or `?`), credentials after an auth
# scheme.
_HEADER_LINE = re.compile(r"\b((?:proxy-)?authorization|(?:set-)?cookie)(['\"]?[ \t]*:[ \t]*)"
                          r"[^'\"\r\n]+", re.I)
_NAMED = re.compile(r"([A-Za-z][\w.\-]*)(['\"]?[ \t]*[:=][ \t]*['\"]?)"
                    r"((?:bearer|basic|token)[ \t\r]+)?([^\s'\"&;,?)}\]]+)", re.I)
_SCHEME = re.compile(r"\b(bearer|basic)(\s+)(?!\*\*\*)[^\s'\",;)}\]]+", re.I)


def message(value: str) -> str:
    """Free text nobody shaped for us (another library's log message, an exception's
    text): URLs as `text` redacts them, query parameters of relative URLs
    (`/v1/traces?api-key=...`), an echoed `authorization:`/`cookie:` header line, other
    `name: value` pairs named like secrets, and `Bearer`/`Basic` credentials."""
    value = text(value)
    if "=" in value or ":" in value:
        value = _HEADER_LINE.sub(lambda m: m.group(1) + m.group(2) + MASK, value)
        value = _NAMED.sub(lambda m: m.group(1) + m.group(2) + (m.group(3) or "") + MASK
                           if _secret_key(m.group(1)) and m.group(4) != MASK
                           else m.group(0), value)
    return _SCHEME.sub(lambda m: m.group(1) + m.group(2) + MASK, value)


def tree(value: Any, key: str = "", hide_path: bool = False) -> Any:
    """A JSON-shaped value (a config, a status document, log fields), redacted by the
    names of the keys it sits under. Returns new containers; never mutates."""
    if isinstance(value, str):
        if key and _secret_key(key):
            return MASK if value else value
        return text(value, hide_path)
    if isinstance(value, Mapping):
        return {k: tree(v, str(k), hide_path or bool(_HIDE_PATH.search(str(k))))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [tree(v, key, hide_path) for v in value]
    return value
