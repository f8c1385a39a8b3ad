"""The one reference the data plane reads: the current `RouteTable`, swapped whole.

Owns the inputs of the routing snapshot (config, replicated state, health, fail-closed)
and rebuilds the table aside whenever one of them changes, then swaps a single
reference. Listeners hear (old, new) after each swap (used to abort in-flight requests
covered by a new kill). Requests read `holder.table` once and keep that table.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.configfile import LoadedConfig
from gateway.domain.routing import RouteTable, build_table
from gateway.domain.statedoc import StateDoc

__all__ = ["TableHolder"]

Listener = Callable[[RouteTable, RouteTable], None]


class TableHolder:
    def __init__(self, loaded: LoadedConfig, doc: StateDoc | None = None) -> None:
        self.loaded = loaded
        self.doc = doc or StateDoc()
        self.unhealthy: frozenset[tuple[str, str]] = frozenset()
        self.fail_closed = False
        self._listeners: list[Listener] = []
        self.table = build_table(loaded.config, self.doc)

    def listen(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _rebuild(self) -> None:
        old = self.table
        self.table = build_table(self.loaded.config, self.doc, self.unhealthy, self.fail_closed)
        for fn in self._listeners:
            fn(old, self.table)

    def apply_doc(self, doc: StateDoc) -> bool:
        """Adopt `doc` if it is newer than what we hold; duplicates and stale ones are no-ops."""
        if doc.generation <= self.doc.generation:
            return False
        self.doc = doc
        self._rebuild()
        return True

    def set_unhealthy(self, unhealthy: frozenset[tuple[str, str]]) -> None:
        if unhealthy != self.unhealthy:
            self.unhealthy = unhealthy
            self._rebuild()

    def set_fail_closed(self, on: bool) -> None:
        if on != self.fail_closed:
            self.fail_closed = on
            self._rebuild()

    def set_config(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self._rebuild()
