"""The config of what a request is matched by: `routes[].match` (path prefix, host,
header, model, case) and `routes[].sticky` (the header that keeps a user on one version).

Owns their frozen pydantic models and per-field checks, and `case_fold`, the one way a
`case_sensitive: false` route and routing compare paths. Imports only the config building
blocks (`gateway.config_types`).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from gateway.config_types import HEADER_NAME, Frozen

__all__ = ["MatchConfig", "StickyConfig", "case_fold"]


# what a request path, as routing reads it (gateway/dataplane/paths.py), never holds as
# written (`?` and `#` only from %3F and %23: a prefix with them means a query or fragment)
_NEVER_ROUTED = re.compile(r"//|[;\\?#]|%[0-9A-Fa-f]{2}")
# a host name (a trailing dot taken off) or a bracketed IPv6 address; never a port
_HOST = re.compile(r"[a-z0-9\-_~!$&'()*+,;=%]+(\.[a-z0-9\-_~!$&'()*+,;=%]+)*|\[[0-9a-f:.]+\]")

# what no request's field value holds as the gateway reads it (llhttp refuses these bytes)
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def case_fold(s: str) -> str:
    """A path as a `case_sensitive: false` route compares it: lower case, and outside ASCII
    upper case first, so the letters a backend's case-insensitive compare takes for ASCII
    ones match too (Java's equalsIgnoreCase and .NET's OrdinalIgnoreCase upper-case: dotless
    i, U+0131, is 'I', long s, U+017F, is 'S'; `str.lower` leaves both as they are)."""
    return s.lower() if s.isascii() else s.upper().lower()


class MatchConfig(Frozen):
    path_prefix: str | None = None
    host: str | None = None
    header: dict[str, str] | None = None
    model: str | None = None
    #: false: the route's backend treats paths case-insensitively, so the prefix matches
    #: in any case (a killed route is not reachable as /V2/Models/IRIS through another)
    case_sensitive: bool = True

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must start with '/'")
        if v is not None and (_NEVER_ROUTED.search(v) or "/./" in v + "/" or "/../" in v + "/"):
            # (a route no request can reach: a kill of it would stop nothing, while its
            # traffic went through a shorter route)
            raise ValueError(f"{v!r} is not a path as routing reads it: write it with '//' "
                             "merged, percent-escapes decoded, and no '.' or '..' segment, "
                             "';', '\\', '?' or '#' (see README, requests read two ways)")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host = v.lower()
        host = host[:-1] if host.endswith(".") else host  # (as a request's Host is read)
        if not _HOST.fullmatch(host):
            raise ValueError(f"{v!r} is not a host name or [IPv6] address without a port: "
                             "a request's Host is matched without its port")
        return host

    @field_validator("header")
    @classmethod
    def _header(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one header")
        seen: dict[str, str] = {}
        for name, val in v.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in seen:  # (one would silently replace the other)
                raise ValueError(f"{seen[name.lower()]!r} and {name!r} name the same header "
                                 "(names are read in any case): write one")
            seen[name.lower()] = name
            if val != val.strip(" \t") or _UNSENDABLE.search(val):
                # (a route no request reaches: a kill of it stops nothing while its traffic
                # goes through another, as for a path_prefix no request has)
                raise ValueError(f"the value of {name!r} ({val!r}) has whitespace at an end "
                                 "or a control character, which no request carries as read "
                                 "(the gateway reads values without leading and trailing "
                                 "whitespace): a route no request could reach, whose kill "
                                 "would stop nothing")
        return {k.lower(): val for k, val in v.items()}

    @model_validator(mode="after")
    def _case_needs_prefix(self) -> MatchConfig:
        if not self.case_sensitive and self.path_prefix is None:
            raise ValueError("case_sensitive: false needs a path_prefix")
        return self

    def keys(self) -> int:
        return sum(x is not None for x in (self.path_prefix, self.host, self.header, self.model))


class StickyConfig(Frozen):
    header: str = Field(min_length=1)

    @field_validator("header")
    @classmethod
    def _lower(cls, v: str) -> str:
        if not HEADER_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid header name: no request could carry it, "
                             "so no user would stay on one version")
        return v.lower()
