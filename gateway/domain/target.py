"""One version of one route as the data plane addresses it: `Target`, its URL parsed once.

Owns `Target` (scheme, host, port, base path and its bytes, the connection pool's origin
key, the model and artifact it serves) and `make_target`, the one place a version's url is
split: a plan builds its targets once per config, never per request. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Target", "make_target"]


@dataclass(frozen=True, slots=True)
class Target:
    """One version of one route, ready to receive traffic."""

    route: str
    name: str
    url: str
    scheme: str
    host: str
    port: int
    base_path: str
    model: str | None
    artifact: str | None
    origin: tuple[str, str, int]
    path_bytes: bytes  # base_path, encoded once
    line_path: bytes  # b" " + path_bytes: the request line's part before the client's target


def make_target(route: str, name: str, url: str, model: str | None, artifact: str | None) -> Target:
    u = urlsplit(url)
    scheme = u.scheme
    port = u.port or (443 if scheme == "https" else 80)
    host = u.hostname or ""
    base = u.path.rstrip("/")
    return Target(route, name, url, scheme, host, port, base, model, artifact,
                  (scheme, host, port), base.encode(), b" " + base.encode())
