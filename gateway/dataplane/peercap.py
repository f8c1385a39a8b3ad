"""The per-client connection cap (`server.max_connections_per_client`, RELIABILITY row 37).

Owns the count of open data-plane connections per peer address: `admit` at accept (False:
that address is at its cap, the connection is refused), `release` when an admitted one ends.
Invariant: an address's count is its admitted connections not yet released, and an address
at zero is not kept (the table is bounded by the open connections). Pure: no I/O, no asyncio,
imports nothing of the gateway.
"""

from __future__ import annotations

__all__ = ["PeerCap"]


class PeerCap:
    """Open connections per peer address (the socket's, as written: one IPv6 address is one
    client; an address the socket does not give is counted as "")."""

    __slots__ = ("limit", "open")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a per-client cap is at least 1, not {limit}")
        self.limit = limit
        self.open: dict[str, int] = {}

    def admit(self, peer: str) -> bool:
        """Count a new connection from `peer`; False (and nothing counted) at the cap."""
        n = self.open.get(peer, 0)
        if n >= self.limit:
            return False
        self.open[peer] = n + 1
        return True

    def release(self, peer: str) -> None:
        """An admitted connection from `peer` has ended."""
        n = self.open.get(peer, 0)
        if n > 1:
            self.open[peer] = n - 1
        else:
            self.open.pop(peer, None)
