"""Listener sockets from `host:port` strings, and how an address is written out.

Owns binding (SO_REUSEADDR always, SO_REUSEPORT for `--workers N`: the supervisor holds
the ports bound but never listening, each worker binds them again and listens), the URL
an instance publishes for a listener, the form of an address in log lines, how much
a connection's socket still has to send (`queued`), and a failed connect in words
(`connect_failure`: the data plane's 502 and the health check's reason).
Foundations only (`config_types.parse_listen`); no event loop.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import socket
import ssl
import termios
from typing import Any

from gateway.config_types import parse_listen

__all__ = ["ListenError", "bind_socket", "bound", "connect_failure", "format_addr",
           "listen_url", "queued", "reserved", "unsent"]


class ListenError(OSError):
    """A listener address that cannot be bound (in use, not ours, not resolvable): the
    message names the address and why, for the person starting the gateway. `setting` is
    the config key that gave the address (`listen`, `admin.listen`) when the caller said,
    and `in_use` tells a port another process holds from the other causes, so `serve` can
    say what to change."""

    def __init__(self, message: str, setting: str | None = None, in_use: bool = False):
        super().__init__(message)
        self.setting = setting
        self.in_use = in_use


def bound(addr: str, reuse_port: bool, port_override: int | None = None,
          setting: str | None = None) -> socket.socket:
    """A socket bound to `addr` (its port replaced by `port_override`), not listening;
    `setting` names the config key of `addr` in a ListenError."""
    host, port = parse_listen(addr)
    if port_override is not None:
        port = port_override
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ListenError(f"cannot listen on {addr}: {exc.strerror or exc}", setting) from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {format_addr((host, port))}: "
                          f"{exc.strerror or exc}", setting,
                          exc.errno == errno.EADDRINUSE) from None
    return sock


def reserved(addr: str, setting: str | None = None) -> socket.socket:
    """A port for a group of workers: bound with SO_REUSEPORT (each worker binds it again),
    never listening. ListenError when anything holds the port already, also a socket with
    SO_REUSEPORT of this user (another `serve --workers` group), which the kernel would let
    the group join silently: two groups, perhaps of two configs or versions, splitting the
    connections and the admin API between them. (A probe without SO_REUSEPORT: no socket
    with it may share the port; `:0` is resolved by it.)"""
    probe = bound(addr, False, setting=setting)
    port = probe.getsockname()[1]
    probe.close()
    return bound(addr, True, port, setting)


def bind_socket(addr: str, reuse_port: bool, port_override: int | None = None,
                setting: str | None = None) -> socket.socket:
    """A bound, listening, non-blocking socket for an asyncio server."""
    sock = bound(addr, reuse_port, port_override, setting)
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def listen_url(addr: tuple[str, int], host: str | None) -> str:
    """The URL this instance publishes for a listener (drills reach every instance so)."""
    if host is None:
        host = addr[0]
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{addr[1]}"


def format_addr(addr: tuple[str, int] | None) -> str:
    """`host:port`, `[v6]:port`, or "" for no address (log lines)."""
    if addr is None:
        return ""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def queued(transport: Any) -> int:
    """The bytes a connection's socket holds not yet taken by its peer (its send queue:
    Linux's SIOCOUTQ, which TIOCOUTQ names); 0 where that cannot be read."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    out = array.array("i", [0])
    with contextlib.suppress(OSError, ValueError):
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, out, True)
    return out[0]


def unsent(transport: Any) -> int:
    """What a connection's peer has yet to take of what was written to it: the transport's
    buffer and its socket's send queue. (The buffer alone stays put while a slow reader
    empties a send queue of megabytes: the socket takes more only once half of it is
    free.) 0 for no transport."""
    if transport is None:
        return 0
    return int(transport.get_write_buffer_size()) + queued(transport)


def connect_failure(exc: OSError) -> str:
    """A connect failure in words that name no address (the client reads them in its 502;
    asyncio's own text, "Connect call failed ('10.0.0.7', 8000)", names the backend)."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"
    if isinstance(exc, socket.gaierror):  # (its errno is getaddrinfo's: os.strerror says
        # "Unknown error -2" for a name that does not resolve)
        return f"the backend's host name did not resolve ({exc.strerror or 'no address'})"
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__
