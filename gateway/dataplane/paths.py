"""Request-target and Host hygiene: the path the gateway routes is the path the backend serves.

Pure. A path that a backend could resolve to another route than the gateway would is
either refused (`BadTarget`, a 400) or normalised, and then forwarded as normalised, so
routing and the backend always see the same path (RELIABILITY rows 33 and 56):

* refused: absolute-form and `*` targets, raw non-ASCII bytes, a `#` fragment (uvicorn and
  aiohttp drop it: `/iris#x` is `/iris` there), `.`/`..` segments, a `\\`,
  an encoded `/`, `\\`, `.`, `;` or NUL, and `;` path parameters (Tomcat, Jetty and Spring
  drop `;params` from segments and resolve `..;` as `..`);
* normalised: runs of `/` (`//v2//models` is `/v2/models`, as nginx's and Envoy's
  merge_slashes make it); percent-escapes are decoded (strict UTF-8) for routing only.

Case is the route's business (`match.case_sensitive: false`); a `Host` is matched lower-case,
without its port and without one trailing dot (`example.com.` is `example.com`).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

__all__ = ["BadTarget", "route_host", "split_target"]

_ENCODED = ("%2f", "%5c", "%2e", "%00", "%3b")
_SLASHES = re.compile(r"//+")
# what a Host may hold (RFC 9110 §7.2: an RFC 3986 reg-name or IP literal, and a port of
# digits): one reading only, so routing and X-Forwarded-Host name the same host
_HOST = re.compile(r"(?:\[[0-9a-z.:%\-_~]+\]|[a-z0-9.\-_~!$&'()*+,;=%]*)(?::[0-9]*)?")


class BadTarget(ValueError):
    """The request target (or Host) is refused; the message says how to send it."""


def split_target(raw: str) -> tuple[str, str]:
    """(the decoded path routing matches, the target to forward) for a raw request target."""
    if raw[:1] != "/":
        raise BadTarget(_not_a_path(raw))
    if not raw.isascii():
        raise BadTarget("the request target holds raw non-ASCII bytes; percent-encode them")
    if "#" in raw:
        raise BadTarget("the request target has a '#' fragment, which backends drop; "
                        "send it without one (or as %23)")
    path, sep, query = raw.partition("?")
    if "\\" in path or ";" in path:
        raise BadTarget("the path has a '\\' or ';' parameters, which backends resolve in "
                        "different ways; send it without them")
    if "%" in path:
        low = path.lower()
        if any(e in low for e in _ENCODED):
            raise BadTarget("the path has an encoded '/', '\\', '.', ';' or NUL; send it "
                            "decoded and normalised")
    if "//" in path:
        path = _SLASHES.sub("/", path)
        raw = path + sep + query
    if "/." in path and any(seg in (".", "..") for seg in path.split("/")):
        raise BadTarget("the path has '.' or '..' segments; send it normalised")
    if "%" not in path:
        return path, raw
    try:
        return unquote_to_bytes(path).decode("utf-8"), raw
    except UnicodeDecodeError:
        raise BadTarget("the path's percent-escapes are not UTF-8") from None


def _not_a_path(raw: str) -> str:
    """What to send instead of a target that is not a path (origin form)."""
    if raw == "*":
        return ("the asterisk-form target ('OPTIONS *') asks about the server itself, which "
                "the gateway does not answer; send the request to a route's path")
    if "://" in raw:
        return "send the request target as a path starting with '/', not as an absolute URL"
    return "send the request target as a path starting with '/'"


def route_host(value: str | None) -> str:
    """The Host as routes match it: lower-case, no port, no trailing dot ('' if absent)."""
    if not value:
        return ""
    host = value.lower()
    if not host.isascii() or _HOST.fullmatch(host) is None:
        raise BadTarget("the Host header is not a host name or address")
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    host = host.rsplit(":", 1)[0] if ":" in host else host
    return host[:-1] if host.endswith(".") else host
