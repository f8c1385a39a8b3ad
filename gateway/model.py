"""Value types of the replicated state: kill flags, runtime overrides, version history.

Owns the state document every instance holds in memory and the state store persists;
it is pure data (frozen dataclasses and their JSON form), with no I/O. The document's
`generation` only grows; `epoch` names the store incarnation that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "HistoryEntry",
    "KillFlag",
    "KillScope",
    "RouteOverride",
    "StateDoc",
    "kill_key",
    "plain",
]

KillScope = Literal["global", "route", "version"]


def plain(obj: Any) -> dict[str, Any]:
    """A flat dataclass (slots, plain values) as a dict; dict values are copied.

    `dataclasses.asdict` recurses and deep-copies, ~10 times slower, and this runs on every
    state change (the document is serialized to be committed and snapshotted)."""
    out = {}
    for name in obj.__slots__:
        v = getattr(obj, name)
        out[name] = dict(v) if type(v) is dict else v
    return out


def kill_key(scope: str, route: str | None = None, version: str | None = None) -> str:
    if scope == "global":
        return "global"
    if scope == "route":
        return f"route:{route}"
    return f"version:{route}:{version}"


@dataclass(frozen=True, slots=True)
class KillFlag:
    scope: KillScope
    route: str | None
    version: str | None
    actor: str
    reason: str
    time: str
    generation: int
    abort_inflight: bool = True

    @property
    def key(self) -> str:
        return kill_key(self.scope, self.route, self.version)

    def public(self) -> dict[str, Any]:
        return plain(self)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    stable: str
    time: str
    actor: str
    reason: str
    url: str | None = None
    artifact: str | None = None
    generation: int = 0


@dataclass(frozen=True, slots=True)
class RouteOverride:
    """A latched runtime override of a route (rollback / promote / weights / auto)."""

    stable: str | None
    weights: dict[str, float]
    actor: str
    reason: str
    time: str
    kind: str


@dataclass(frozen=True, slots=True)
class StateDoc:
    """The whole replicated state. Replaced, never mutated."""

    generation: int = 0
    epoch: str = ""
    kills: dict[str, KillFlag] = field(default_factory=dict)
    overrides: dict[str, RouteOverride] = field(default_factory=dict)
    history: dict[str, tuple[HistoryEntry, ...]] = field(default_factory=dict)
    #: route -> version -> {"url", "artifact", "time"}: identities seen, never rewritten
    identities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: route -> progressive delivery state {"step", "since", "state"}
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)

    def with_changes(self, **kw: Any) -> StateDoc:
        return replace(self, **kw)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "epoch": self.epoch,
            "kills": {k: plain(v) for k, v in self.kills.items()},
            "overrides": {k: plain(v) for k, v in self.overrides.items()},
            "history": {k: [plain(e) for e in v] for k, v in self.history.items()},
            "identities": self.identities,
            "progress": self.progress,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StateDoc:
        return cls(
            generation=int(d.get("generation", 0)),
            epoch=str(d.get("epoch", "")),
            kills={k: KillFlag(**v) for k, v in (d.get("kills") or {}).items()},
            overrides={k: RouteOverride(**v) for k, v in (d.get("overrides") or {}).items()},
            history={k: tuple(HistoryEntry(**e) for e in v)
                     for k, v in (d.get("history") or {}).items()},
            identities=dict(d.get("identities") or {}),
            progress=dict(d.get("progress") or {}),
        )

    def previous_stable(self, route: str, current: str) -> HistoryEntry | None:
        """The most recent history entry whose stable differs from `current`."""
        for entry in reversed(self.history.get(route, ())):
            if entry.stable != current:
                return entry
        return None

