"""The building blocks every config section is written with: the frozen model base,
durations, listen addresses, bounds and URL checks.

Owns the value grammars (a duration is seconds once parsed; bare numbers are refused) and
the wording of the per-field errors they raise. Imports only pydantic and the standard
library: every `gateway.config*` module builds on it, and it builds on none of them.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from gateway.config_secretnames import not_a_secret

__all__ = [
    "DURATION_PATTERN",
    "HEADER_NAME",
    "Deadline",
    "Duration",
    "EnvName",
    "Frozen",
    "Listen",
    "SecretEnv",
    "Timeouts",
    "at_least",
    "at_most",
    "check_http_url",
    "finite",
    "is_loopback",
    "parse_duration",
    "parse_listen",
    "positive",
    "weight_problem",
]

_DURATION = re.compile(r"^\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: a header field name (RFC 9110's token): what `match.header`, `sticky.header` and a
#: fallback's `headers` may name
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HTTP_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
#: the host and port of a URL's authority as a connection can use them
_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9._~-]+)?\])(?::[0-9]+)?")


class Frozen(BaseModel):
    """The base of every config model: immutable, unknown keys refused, and no number
    taken from `true`/`false` (pydantic's lax mode reads `weight: yes` as weight 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None and _holds_bool(v):
            f = cls.model_fields[info.field_name]
            # (a field read by a parser of its own, a Duration say, refuses true/false in
            # its own words: "must be a number" would mislead where a bare number is refused)
            if _numeric(f.annotation) and not _parsed(f.metadata):
                raise ValueError("must be a number, not true/false")
        return v


def _holds_bool(v: Any) -> bool:
    return isinstance(v, bool) or (isinstance(v, (list, tuple))
                                   and any(isinstance(x, bool) for x in v))


def _parsed(metadata: Any) -> bool:
    """Whether a field's value is read by a parser of its own (a BeforeValidator)."""
    return any(isinstance(m, BeforeValidator) for m in metadata)


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number, or a list or tuple of them (optional or not), that
    no parser of its own reads."""
    if annotation in (int, float):
        return True
    args = [a for a in get_args(annotation) if a is not type(None) and a is not Ellipsis]
    return bool(args) and all(
        (not _parsed(get_args(a)[1:]) and _numeric(get_args(a)[0]))
        if get_origin(a) is Annotated else _numeric(a) for a in args)


def parse_duration(value: Any) -> float:
    """'250ms' / '2s' / '1.5m' / '1h' → seconds. Bare numbers are refused (ambiguous units)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("must be a duration string such as '250ms', '2s' or '1m'")
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration; use a number (at most 9 digits before "
                         "and after the point) and ms, s, m or h ('2s')")
    return float(m.group(1)) * _UNIT[m.group(2)]


#: what `killgate schema` says a duration is (the grammar of `_DURATION`, which editors check
#: as they type: a bare float here put a red line under every duration of the examples)
DURATION_PATTERN = r"^\s*[0-9]{1,9}(\.[0-9]{1,9})?\s*(ms|s|m|h)\s*$"

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema({
    "type": "string", "pattern": DURATION_PATTERN,
    "description": "a duration: a number and ms, s, m or h ('250ms', '2s', '1m', '1h')"})]


#: the name of an environment variable that holds a key (never the key: `not_a_secret`;
#: `${NAME}` or `$NAME` is NAME, before the schema reads it)
SecretEnv = Annotated[str, BeforeValidator(not_a_secret)]
EnvName = Annotated[SecretEnv, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


def positive(limit: float) -> AfterValidator:
    """A field's check that its duration is > 0 and at most `limit` seconds:
    `interval: Annotated[Duration, positive(3600.0)] = 2.0`."""

    def check(v: float) -> float:
        if not 0 < v <= limit:
            raise ValueError(f"must be > 0 and at most {limit:g}s")
        return v

    return AfterValidator(check)


def at_most(limit: float, why: str = "") -> AfterValidator:
    """A field's check that its duration (0 allowed) is at most `limit` seconds
    (`Annotated[Duration, at_most(3600.0, why)]`): a long one is far more often a slip of
    the unit (`30h` for `30m`) than meant, so it is refused, saying why the bound is where
    it is (`why`)."""

    def check(v: float) -> float:
        if v > limit:
            raise ValueError(f"must be at most {_human(limit)}{f' ({why})' if why else ''}; "
                             "is the unit right (m is minutes, h hours)?")
        return v

    return AfterValidator(check)


def at_least(floor: float, why: str) -> AfterValidator:
    """A field's check that its duration is at least `floor` seconds
    (`Annotated[Duration, at_least(1.0, why), at_most(...)]`), where a shorter one (`0s`
    typed by a tired hand) would make the gateway busy or blind; the error says why (`why`)."""

    def check(v: float) -> float:
        if v < floor:
            shown = _human(floor) if floor >= 1 else f"{floor * 1000:g}ms"
            raise ValueError(f"must be at least {shown} ({why})")
        return v

    return AfterValidator(check)


#: a duration > 0 and at most an hour (a backend exchange's deadlines, a probe's interval)
Deadline = Annotated[Duration, positive(3600.0)]


def _human(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class Timeouts(Frozen):
    """The deadlines of an exchange with a backend, each > 0 and at most an hour
    (routes[].timeouts; routes[].shadow.timeouts with a shorter total)."""

    connect: Deadline = 1.0
    total: Deadline = 60.0
    idle: Deadline = 30.0


def finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


#: a version's weight is 0 or within these (relative weights: 90/10, 0.9/0.1 or 1/1000);
#: past them the sums and scores of routing overflow: every sticky request of a route
#: weighted 1e-320/1e-320 failed (each score infinite, none chosen), 1e308/1e308 sent
#: all weighted traffic to the last version
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6


def weight_problem(v: float) -> str | None:
    """Why `v` is not a weight (None when it is one)."""
    if not math.isfinite(v) or v < 0:
        return "must be a finite number >= 0"
    if v != 0 and not MIN_WEIGHT <= v <= MAX_WEIGHT:
        return f"must be 0 or between {MIN_WEIGHT:g} and {MAX_WEIGHT:g} (weights are relative)"
    return None


def check_http_url(v: str) -> str:
    """An http:// or https:// URL with a host and optionally a path (no query, no fragment)."""
    if not _HTTP_URL.match(v):
        raise ValueError("must be an http:// or https:// URL with a host, optionally a path")
    odd = next((c for c in v if not " " < c < "\x7f"), None)
    if odd is not None:
        # (sent as it is written: a zero-width space pasted with the URL put raw UTF-8 bytes
        # in every request line, each answered 400 by the backend, after `check` said ok)
        raise ValueError(f"holds the character U+{ord(odd):04X} at position {v.index(odd) + 1}, "
                         "not printable ASCII (pasted with it?): delete it, percent-encode a "
                         "path's, and write a host name in its xn-- (IDNA) form")
    # (what the shape lets through but a connection cannot use: the gateway's start died
    # on it with a traceback, and a reload was refused saying only "ValueError")
    try:
        u = urlsplit(v)
        port = u.port
    except ValueError:
        raise ValueError("must be an http:// or https:// URL whose port is a number from 1 to "
                         "65535 and whose host is a name or an address ([::1] for IPv6)") from None
    if not u.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, optionally a path")
    host = u.netloc.rsplit("@", 1)[-1]
    if "$" in host:
        # (`http://${BACKEND_HOST}:8080` passed check, and no request ever left: no resolver
        # knows the name `${backend_host}`)
        raise ValueError("its host holds '$': killgate does not expand environment variables "
                         "in the config; write the value, or render the file before it is "
                         "deployed (envsubst, Helm, Kustomize)")
    if not _HOST.fullmatch(host):
        raise ValueError("its host must be a name (letters, digits, '.', '-', '_'), an IPv4 "
                         "address or an [IPv6] address, with an optional :port")
    if port == 0:
        raise ValueError("must be an http:// or https:// URL whose port is a number from 1 to "
                         "65535 (0 is no port to connect to)")
    return v


def parse_listen(value: str) -> tuple[str, int]:
    """'0.0.0.0:8080' / '[::1]:8080' / 'localhost:0' → (host, port)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", value.strip())
    if not m:
        raise ValueError(f"{value!r} is not host:port (IPv6 as [::1]:8080)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    if m.group(1):
        ipaddress.IPv6Address(host)
    elif not re.fullmatch(r"[A-Za-z0-9.\-]+", host):
        raise ValueError(f"{host!r} is not a valid host name or address")
    return host, port


def _check_listen(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a 'host:port' string such as '127.0.0.1:8080'")
    parse_listen(v)
    return v


#: a 'host:port' listen address, kept as written once it parses
Listen = Annotated[str, BeforeValidator(_check_listen)]


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
