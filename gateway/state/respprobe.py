"""Why a redis connection failed at its first bytes, when the URL's scheme is the wrong one.

A `rediss://` URL at a plain-text redis: our TLS ClientHello reads to redis as an inline
command it waits to see the end of, so the connect ran out its whole deadline and said "did
not answer in time" (or, when the hello held a newline, redis's `-ERR` broke the TLS layer).
A `redis://` URL at a TLS port: the server resets the connection at our first command, which
read as "the redis connection closed". Both point an operator at the network, not the URL.

Each probe runs only after such a failure (one more connection, with its own short
deadline), never on a connection that works: they name the scheme the server does speak.
"""

from __future__ import annotations

import asyncio
import ssl

__all__ = ["WrongScheme", "not_plain", "not_tls", "speaks_plain", "speaks_tls"]

#: the longest a probe waits (after the failure it explains: a connect that failed takes
#: at most its own deadline plus this)
PROBE_TIMEOUT = 1.0


class WrongScheme(ConnectionError):
    """The server answers, in the other protocol than the URL's scheme says."""


def not_tls(where: str) -> WrongScheme:
    # (not "use redis://" alone: whoever answers plain text there, a redis without TLS or
    # something between us and it that blocks TLS, would be sent the password in clear)
    return WrongScheme(f"the store at {where} did not answer TLS: it answers plain-text "
                       "redis; turn TLS on there (tls-port), or use redis:// (not "
                       "rediss://) only on a network trusted with its password in clear")


def not_plain(where: str) -> WrongScheme:
    return WrongScheme(f"the store at {where} closed the connection at the first command "
                       "and answers TLS: use rediss:// (not redis://)")


async def speaks_plain(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """The server at host:port answers a plain-text inline PING with a RESP reply (`+PONG`,
    or an error such as `-NOAUTH`: either is redis speaking plain text)."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"PING\r\n")
            first = await reader.read(1)
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.transport.abort()
    return first in (b"+", b"-")


async def speaks_tls(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """The server at host:port completes a TLS handshake. Nothing is verified (no data is
    sent: this only tells a TLS server from another); a server that wants a client
    certificate still completes it, under TLS 1.3, before it asks."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                      server_hostname=host)
    except (OSError, TimeoutError):  # ssl.SSLError included
        return False
    finally:
        if writer is not None:
            writer.transport.abort()
    return True
