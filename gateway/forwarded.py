"""Who the client is behind proxies we trust (`admin.trusted_proxies`, both planes).

Owns the rule: `X-Forwarded-For` is believed only when the socket peer is a trusted
proxy, and then only from the right: the client is the right-most hop that is not a
trusted proxy (hops to its left were written by the client and prove nothing). A hop
that is not an IP address ends the walk at the proxy that handed it over, so no text
of the caller's choosing ever becomes an address. Pure; foundations only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

__all__ = ["ClientAddress", "trusted_proxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_HOPS = 32  # more hops than any real proxy chain: the rest are ignored


def _addr(text: str) -> Address | None:
    s = text.strip()
    if s.startswith("[") and "]" in s:  # "[::1]:8080"
        s = s[1:s.index("]")]
    elif s.count(":") == 1:  # "10.0.0.1:8080"
        s = s.split(":", 1)[0]
    try:
        a = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


class ClientAddress:
    """Trusted proxy networks, parsed once; answers who the client is."""

    __slots__ = ("networks",)

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)

    def trusted(self, addr: Address | None) -> bool:
        return addr is not None and any(addr in n for n in self.networks)

    def _walk(self, peer: str, xff: Sequence[str]) -> tuple[str, list[str]]:
        """(client, the trusted proxies between it and us, nearest last)."""
        peer_addr = _addr(peer)
        if not self.networks or not self.trusted(peer_addr):
            return peer, []
        hops = [h for value in xff for h in value.split(",") if h.strip()][-MAX_HOPS:]
        via: list[str] = [str(peer_addr)]
        for hop in reversed(hops):
            addr = _addr(hop)
            if addr is None:  # not an address: the proxy that passed it on is the client
                return via.pop(), via[::-1]
            if not self.trusted(addr):
                return str(addr), via[::-1]
            via.append(str(addr))
        return via.pop(), via[::-1]  # every hop trusted: the farthest one

    def client(self, peer: str | None, xff: Sequence[str] = ()) -> str:
        """The client's address: `peer` unless it is a trusted proxy."""
        if peer is None:
            return "unknown"
        if not self.networks:
            return peer
        return self._walk(peer, xff)[0]

    def forwarded_for(self, peer: str | None, xff: Sequence[str] = ()) -> str:
        """The X-Forwarded-For value to send upstream: the client, then the trusted
        proxies it came through, then `peer` (never what the client wrote itself)."""
        if peer is None:
            return "unknown"
        if not self.networks:
            return peer
        client, via = self._walk(peer, xff)
        return ", ".join([client, *via]) if via else client


@lru_cache(maxsize=8)
def trusted_proxies(cidrs: tuple[str, ...]) -> ClientAddress:
    """The parsed form of a config's list (cached: configs are reloaded, rarely changed)."""
    return ClientAddress(cidrs)
