"""The admin client's connection: which proxy a call goes through, how long it may take, how
much of an answer is read.

Owns three bounds the operator's terminal relies on: a loopback admin URL never goes through
`http_proxy`/`https_proxy` (the bearer token would go to the proxy; Go's, and so kubectl's,
rule), other hosts honour them and `no_proxy`, as curl does; `--timeout` bounds a whole try
(connect, head and body), so an answer dripped a byte at a time cannot hold the command; an
answer over `MAX_ANSWER` bytes is refused before it fills the memory. Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import threading
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["MAX_ANSWER", "Deadline", "TooLarge", "opener", "proxy_of", "read_capped"]

MAX_ANSWER = 32 << 20  # the largest answer read (an audit page of 1000 events is ~1 MiB)


class TooLarge(Exception):
    """An answer longer than the cap: not read further."""


class Deadline:
    """One try's time: at `timeout` every connection it opened is shut, so a read blocked on
    a peer that drips (or holds) its answer ends; `fired` says it was the deadline."""

    def __init__(self, timeout: float) -> None:
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.fired:
                _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._socks:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # (already closed)
        sock.shutdown(socket.SHUT_RDWR)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None  # urllib then raises HTTPError with the 3xx: handled in http.call


def _watched(cls: type[http.client.HTTPConnection], deadline: Deadline) -> Any:
    class Conn(cls):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Conn


class _Http(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._conn = _watched(http.client.HTTPConnection, deadline)

    def http_open(self, req: Any) -> Any:
        return self.do_open(self._conn, req)


class _Https(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._conn = _watched(http.client.HTTPSConnection, deadline)

    def https_open(self, req: Any) -> Any:
        return self.do_open(self._conn, req,
                            context=self._context)  # type: ignore[attr-defined]


def opener(url: str, deadline: Deadline) -> urllib.request.OpenerDirector:
    """An opener for one try at `url`: no redirects, its connections under `deadline`, the
    proxy the environment names for it (read now, not at import), none for loopback."""
    return urllib.request.build_opener(
        _NoRedirect(), urllib.request.ProxyHandler(_proxies(url)), _Http(deadline),
        _Https(deadline))


def proxy_of(url: str) -> str | None:
    """The host:port of the proxy a call to `url` goes through (never its user name or
    password), or None: said in an error, which is the proxy's rather than the API's."""
    proxy = _proxies(url).get(urllib.parse.urlsplit(url).scheme)
    if not proxy:
        return None
    return urllib.parse.urlsplit(proxy if "://" in proxy else f"//{proxy}").netloc \
        .rpartition("@")[2] or None


def _proxies(url: str) -> dict[str, str]:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    proxies = urllib.request.getproxies()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if _loopback(host) or _no_proxy(proxies.get("no", ""), host, port) \
            or urllib.request.proxy_bypass(parts.netloc):
        return {}
    return proxies


def _no_proxy(value: str, host: str, port: int) -> bool:
    """Whether `no_proxy` names `host` as curl and Go (kubectl) read it: `*`; a name and the
    names under it (`.svc` or `svc`); an IP address, IPv6 with or without its brackets; a
    CIDR range (`10.0.0.0/8`, Kubernetes' usual); an entry's `:port` only for that port.
    urllib matched neither a range nor a bare IPv6 address, and sent the token to the proxy."""
    host = host.rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in value.lower().split(","):
        name, want = _entry(entry.strip())
        if name == "*":
            return True
        if not name or (want is not None and want != port):
            continue
        if ip is not None:
            with contextlib.suppress(ValueError):
                if ip in ipaddress.ip_network(name, strict=False):
                    return True
        elif host == name.lstrip(".") or host.endswith("." + name.lstrip(".")):
            return True
    return False


def _entry(entry: str) -> tuple[str, int | None]:
    """A no_proxy entry's host and port (None: any port)."""
    host, port = entry, ""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    return host.rstrip("."), (int(port) if port.isdigit() else None)


def _loopback(host: str) -> bool:
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:  # (0.0.0.0 and :: reach this host too: `listen: 0.0.0.0:8081` copied into the URL)
        ip = ipaddress.ip_address(host)
    except ValueError:
        # the short and numeric forms the C resolver also takes for an IPv4 address
        # (`127.1`, `2130706433`, `0x7f.1`): urllib connects to 127.0.0.1 for them
        if not host or host.strip("0123456789abcdefx."):
            return False
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    return ip.is_loopback or ip.is_unspecified


def read_capped(resp: Any, deadline: Deadline, cap: int = MAX_ANSWER) -> bytes:
    """The body of `resp` (an HTTPResponse), chunk by chunk as it comes; TooLarge past `cap`,
    TimeoutError when `deadline` cut it."""
    try:
        body = _read(resp, cap)
    except (http.client.HTTPException, OSError):
        if deadline.fired:
            raise TimeoutError from None
        raise
    if deadline.fired:  # (an answer whose end is its connection's close: the shut socket
        raise TimeoutError  # read as that end, a part taken for the whole)
    return body


def _read(resp: Any, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"over {cap >> 20} MiB")
        parts.append(chunk)
    if getattr(resp, "length", None):  # (a Content-Length not reached: cut short)
        raise http.client.IncompleteRead(b"".join(parts), resp.length)
    return b"".join(parts)
