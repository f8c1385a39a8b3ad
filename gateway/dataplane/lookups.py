"""What the request path remembers: targets, Hosts and route matches seen lately.

Owns the misses of `Proxy`'s three bounded caches (a base of it): a request target split
and encoded for forwarding, a Host as routing reads it, and a table's match of a (path,
Host) pair when no route matches by header fields. Each is kept only when short and
cleared when full (CACHE_MAX), so a flood of distinct targets costs bounded memory. The
target and Host of a connection's last request are its own (`Connection.last_target`,
`last_host`: compared first, inline in `Proxy.handle`); a match's hit is the proxy's own
subscript, inline: these run only on a miss.
"""

from __future__ import annotations

from gateway.dataplane.outgoing import CACHE_MAX, CACHED_TARGET
from gateway.dataplane.paths import route_host, split_target
from gateway.dataplane.request import Connection, Request
from gateway.domain.routetable import RouteTable
from gateway.domain.routing import RoutePlan

__all__ = ["LastMatch", "Lookups"]


class LastMatch:
    """The table `Proxy._matched` holds matches of, and the last (path, Host) pair matched
    in it and its route (None: no route), found again by `is` (`Proxy._route`)."""

    __slots__ = ("host", "path", "plan", "table")

    def __init__(self) -> None:
        self.table: RouteTable | None = None
        self.path: str | None = None  # (None: no pair yet, or the table changed since)
        self.host = ""
        self.plan: RoutePlan | None = None


class Lookups:
    # raw target -> split_target(), the forwarded target encoded
    _targets: dict[bytes, tuple[str, bytes]]
    _hosts: dict[bytes | None, str]  # raw Host -> route_host()
    # (path, Host) -> the route they match in the proxy's `_last.table` (None: not kept)
    _matched: dict[tuple[str, str], RoutePlan] | None

    def _target_of(self, conn: Connection, raw: bytes) -> tuple[str, bytes]:
        """A target other than `conn`'s last: from the cache, or split anew; then `conn`'s
        last (a compare finds it again: `Proxy.handle`), when short as the cache keeps
        them: an idle connection holds no 8 KiB target (three copies: ~24 KiB a
        connection, ~0.5 GB over 20,000 idle ones; the one before stays its last)."""
        try:  # (a subscript costs less than a `get` call)
            split = self._targets[raw]
        except KeyError:
            split = self._new_target(raw)
            if len(raw) > CACHED_TARGET:
                return split
        conn.last_target, conn.last_split = raw, split
        return split

    def _host_of(self, conn: Connection, req: Request) -> str:
        """`req`'s Host, other than `conn`'s last, as routing reads it (as `_target_of`)."""
        raw = req.host
        try:
            host = self._hosts[raw]
        except KeyError:
            host = self._new_host(raw, req)
            if raw is not None and len(raw) > CACHED_TARGET:
                return host
        conn.last_host, conn.last_route_host = raw, host
        return host

    def _new_target(self, raw: bytes) -> tuple[str, bytes]:
        """A target not seen lately: its path as routing reads it and the target forwarded
        (remembered when short: a bounded cache, cleared when full)."""
        path, target_s = split_target(raw.decode("latin-1"))
        known = (path, target_s.encode("latin-1"))
        if len(raw) <= CACHED_TARGET:
            if len(self._targets) >= CACHE_MAX:
                self._targets.clear()
            self._targets[raw] = known
        return known

    def _new_host(self, raw: bytes | None, req: Request) -> str:
        """A Host not seen lately, as routing reads it (remembered as `_new_target` does)."""
        host = route_host(req.headers.get("host") if raw and not raw.isascii()
                          else raw.decode("ascii") if raw else None)
        if raw is not None and len(raw) <= CACHED_TARGET:
            if len(self._hosts) >= CACHE_MAX:
                self._hosts.clear()
            self._hosts[raw] = host
        return host

    def _remember(self, key: tuple[str, str], plan: RoutePlan) -> None:
        """Keep a match of the current table (short paths and Hosts; cleared when full)."""
        matched = self._matched
        if matched is not None and len(key[0]) <= CACHED_TARGET \
                and len(key[1]) <= CACHED_TARGET:
            if len(matched) >= CACHE_MAX:
                matched.clear()
            matched[key] = plan
