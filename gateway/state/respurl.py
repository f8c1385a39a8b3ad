"""Where a Redis is: its URL read into an Endpoint (redis://, rediss:// with TLS options,
unix://, and redis+sentinel:// for a master the sentinels name). redis-py parses the URL
grammar it documents, so every option it takes means the same here. resp.py connects to it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio.connection import parse_url

__all__ = ["Endpoint", "parse_endpoint"]

_SSL_KEYS = {"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
             "ssl_check_hostname", "ssl_password", "ssl_ca_data"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # unix socket
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None  # the master's name, with sentinels
    sentinel_password: str | None = None

    def describe(self) -> str:
        if self.sentinels:
            return f"sentinel service {self.service!r}"
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


def _tls_context(opts: dict[str, Any]) -> ssl.SSLContext:
    reqs = str(opts.get("ssl_cert_reqs", "required")).lower()
    ctx = ssl.create_default_context(cafile=opts.get("ssl_ca_certs"),
                                     capath=opts.get("ssl_ca_path"),
                                     cadata=opts.get("ssl_ca_data"))
    if reqs in ("none", "cert_none"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.verify_mode = ssl.CERT_OPTIONAL if reqs in ("optional", "cert_optional") \
            else ssl.CERT_REQUIRED
        check = str(opts.get("ssl_check_hostname", "true")).lower()
        ctx.check_hostname = check not in ("false", "0", "no")
    if opts.get("ssl_certfile"):
        ctx.load_cert_chain(opts["ssl_certfile"], opts.get("ssl_keyfile"),
                            opts.get("ssl_password"))
    return ctx


def parse_endpoint(url: str) -> Endpoint:
    """redis://, rediss://, unix:// (redis-py's URL grammar) and
    redis+sentinel://[:password@]h1:26379,h2:26379/service[/db]. Raises ValueError."""
    if url.startswith("redis+sentinel://"):
        u = urlsplit(url)
        hosts = []
        for hp in u.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = hp.rpartition(":")
            if ":" not in hp or hp.endswith("]"):  # no port: the sentinels' default
                host, port = hp, ""
            hosts.append((host.strip("[]") or "127.0.0.1", int(port or 26379)))
        parts = [p for p in u.path.split("/") if p]
        if not parts:
            raise ValueError("a redis+sentinel:// URL needs the service name: "
                             "redis+sentinel://host:26379/mymaster/0")
        password = unquote(u.password) if u.password else None
        return Endpoint(sentinels=tuple(hosts), service=parts[0],
                        db=int(parts[1]) if len(parts) > 1 else 0,
                        password=password, sentinel_password=password)
    opts: dict[str, Any] = dict(parse_url(url))
    unknown = {k for k in opts if k.startswith("ssl_")} - _SSL_KEYS
    if unknown:
        raise ValueError(f"unsupported TLS option(s) in the redis URL: {', '.join(sorted(unknown))}")
    tls = _tls_context(opts) if url.startswith("rediss://") else None
    return Endpoint(host=opts.get("host") or "127.0.0.1", port=int(opts.get("port") or 6379),
                    path=opts.get("path"), tls=tls, username=opts.get("username"),
                    password=opts.get("password"), db=int(opts.get("db") or 0))
