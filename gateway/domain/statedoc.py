"""The replicated state: the document, and the one rule by which it moves on.

Owns the state document every instance holds in memory and the state store persists, and
`apply_change`, the one rule by which a document moves on (next generation, kills,
overrides, history appended and trimmed; the identities kept: `domain.identities`); the
values it holds (kill flags, overrides, history, progress, drills) are in
`domain.stateparts`, and the rule across versions (FORMAT, NewerDocument) in
`domain.newerdoc`, both re-exported here. Pure data, no I/O. The document's `generation`
only grows; `epoch` names the store incarnation that produced it. A document read back
from a store is validated whole (pydantic): it is either a well-typed `StateDoc` or a
`ValueError` (a `NewerDocument` when a newer version wrote it).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from gateway.domain.identities import MAX_IDENTITIES, MAX_IDENTITIES_ALL, recorded
from gateway.domain.newerdoc import FORMAT, NewerDocument, newer
from gateway.domain.slotted import copied, copier, fast_init
from gateway.domain.stateparts import (
    MAX_GENERATION,
    DrillRecord,
    Generation,
    HistoryEntry,
    KillFlag,
    KillScope,
    Progress,
    RolledOff,
    RouteOverride,
    kill_key,
    plain,
)
from gateway.domain.writeids import lifted_after, lifted_writes_after, new_write, trim_writes

__all__ = [
    "FORMAT",
    "MAX_GENERATION",
    "MAX_HISTORY",
    "MAX_IDENTITIES",
    "MAX_IDENTITIES_ALL",
    "Change",
    "DrillRecord",
    "HistoryEntry",
    "KillFlag",
    "KillScope",
    "NewerDocument",
    "Progress",
    "RolledOff",
    "RouteOverride",
    "StateDoc",
    "apply_change",
    "kill_key",
    "plain",
]

MAX_HISTORY = 100  # entries kept per route (the oldest are dropped)

@dataclass(frozen=True, slots=True)
class StateDoc:
    """The whole replicated state. Replaced, never mutated."""

    # for from_json: no NaN or infinite weights; unknown keys (newer writers) refused,
    # as NewerDocument (FORMAT's rule: domain/newerdoc.py)
    __pydantic_config__ = ConfigDict(allow_inf_nan=False, extra="forbid")

    generation: Generation = 0
    epoch: str = ""
    kills: dict[str, KillFlag] = field(default_factory=dict)
    overrides: dict[str, RouteOverride] = field(default_factory=dict)
    history: dict[str, tuple[HistoryEntry, ...]] = field(default_factory=dict)
    #: route -> version -> {"url", "artifact", "time"}: identities seen, never rewritten
    identities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: route -> progressive delivery state {"canary", "step", "since", "state"}
    progress: dict[str, Progress] = field(default_factory=dict)
    #: drill id -> the open drill (started, not yet ended)
    drills: dict[str, DrillRecord] = field(default_factory=dict)
    #: "kind:route" -> the last finished drill's summary (exported as killgate_drill_last_*)
    drill_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the hash of the newest audit event when this document was committed: the head
    #: this (signed) document anchors, so events cut off the trail's end are noticed
    audit_head: str = ""
    #: the position of `audit_head` in the trail (1: its first event): it orders the
    #: documents of one generation (an event without a state change keeps the generation),
    #: so a replayed older one is never taken for the newest head
    audit_seq: int = 0
    #: id -> an open two-person approval request (admin/approvals.py owns the record)
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: epoch -> the newest generation of it this document descends from (set by re-seeds,
    #: which start an epoch): whether a document of another epoch knows what we hold
    lineage: dict[str, Generation] = field(default_factory=dict)
    #: "<generation>:<write id>" of the newest MAX_WRITES writes this document descends
    #: from (a re-seed's: both sides'), by generation, its own last: whether a newer
    #: document descends from the one an instance holds, or stands on another branch of
    #: the history (domain/branches.py). Strings: validated ten times faster than pairs.
    writes: tuple[str, ...] = ()
    #: kill key -> the `generation` of the newest kill flag an unkill lifted (writeids.py)
    lifted: dict[str, Generation] = field(default_factory=dict)
    #: kill key -> the writes of its newest kill flags lifted or replaced (writeids.py)
    lifted_writes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: route -> the versions rollbacks took off it, oldest first (domain/rolledoff.py)
    rolled_off: dict[str, tuple[RolledOff, ...]] = field(default_factory=dict)
    #: the format it was written in (FORMAT; one past it: NewerDocument)
    format: Annotated[int, Field(le=FORMAT)] = FORMAT

    def with_changes(self, **kw: Any) -> StateDoc:
        """A copy with the fields `kw` names replaced: `dataclasses.replace`'s result in
        under half its instructions (58k → ~20k, callgrind; a kill's committer makes one
        before its commit leaves, and one as stored): stateparts.copier's. No validation,
        no __post_init__: neither replace nor the constructor has any here."""
        return _copy(self, **kw)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "epoch": self.epoch,
            # (an empty part's comprehension skipped: ~1.5k instructions each, and most
            # are empty; the committer writes this before its commit leaves)
            "kills": {k: plain(v) for k, v in self.kills.items()} if self.kills else {},
            "overrides": {k: plain(v) for k, v in self.overrides.items()}
            if self.overrides else {},
            "history": {k: [plain(e) for e in v] for k, v in self.history.items()}
            if self.history else {},
            "identities": self.identities,
            "progress": self.progress,
            "drills": {k: {**plain(v), "injected": list(v.injected)}
                       for k, v in self.drills.items()} if self.drills else {},
            "drill_results": self.drill_results,
            "audit_head": self.audit_head,
            "audit_seq": self.audit_seq,
            "approvals": self.approvals,
            "lineage": self.lineage,
            "writes": list(self.writes),
            "lifted": self.lifted,
            "lifted_writes": {k: list(v) for k, v in self.lifted_writes.items()}
            if self.lifted_writes else {},
            "rolled_off": {k: [plain(e) for e in v] for k, v in self.rolled_off.items()}
            if self.rolled_off else {},
            "format": self.format,
        }

    @classmethod
    def from_json(cls, d: Any) -> StateDoc:
        """The document from its JSON form; ValueError when it is not a valid one (wrong
        shape or types anywhere), so a corrupt store reads as unavailable, never as a crash
        of the instance reading it."""
        try:
            return _DOC_ADAPTER.validate_python(d)
        except ValidationError as exc:
            refusal = newer(exc)
            if refusal is not None:
                gen = d.get("generation") if isinstance(d, dict) else None
                refusal.generation = gen if type(gen) is int and gen >= 0 else None
                raise refusal from None
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "document"
            raise ValueError(f"not a valid state document: {where}: {first['msg']} "
                             f"({exc.error_count()} problem(s))") from None

    @classmethod
    def from_json_bytes(cls, body: bytes) -> StateDoc | None:
        """The document from its JSON bytes, parsed and validated in one pass by pydantic's
        own reader (on every instance, for every pushed kill: ~98k instructions for a 1.4 KB
        document against ~186k for `json.loads` then `from_json`); None whenever that reader
        refuses them: `from_json(json.loads(body))` then says why in its own words, or reads
        what only it accepts (a lone surrogate escape, a byte order mark). (Its validator's
        own call, in Rust: TypeAdapter's Python wrapper was ~2.6k instructions of it.)"""
        try:
            return _VALIDATE_JSON(body)
        except ValidationError:
            return None

    def previous_stable(self, route: str, current: str,
                        skip: Container[str] = ()) -> HistoryEntry | None:
        """The most recent history entry whose stable differs from `current` and is not in
        `skip` (the versions rolled off: domain/rolledoff.previous_stable)."""
        for entry in reversed(self.history.get(route, ())):
            if entry.stable != current and entry.stable not in skip:
                return entry
        return None


_DOC_ADAPTER: TypeAdapter[StateDoc] = TypeAdapter(StateDoc)
_VALIDATE_JSON = _DOC_ADAPTER.validator.validate_json
_copy = copier(StateDoc)  # (each field's slot set straight: stateparts.py)


@fast_init
@dataclass(frozen=True, slots=True)
class Change:
    """What one write changes. `None` values remove: a lifted kill, a released override,
    a finished progressive rollout. History entries are appended."""

    kills: Mapping[str, KillFlag | None] = field(default_factory=dict)
    overrides: Mapping[str, RouteOverride | None] = field(default_factory=dict)
    history: Mapping[str, tuple[HistoryEntry, ...]] = field(default_factory=dict)
    progress: Mapping[str, Progress | None] = field(default_factory=dict)
    #: route -> version -> identity record, added or replaced
    identities: Mapping[str, Mapping[str, dict[str, Any]]] = field(default_factory=dict)
    epoch: str | None = None
    #: the new document's whole `lineage` (None: the old one's): an operator's vouch
    #: (state/vouching.py) starts an epoch that descends from the instance's own
    lineage: Mapping[str, int] | None = None
    #: id -> an open approval request (admin/approvals.py), or None to close it
    approvals: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)
    #: open drills added, replaced or (None) closed; last results per "kind:route"
    drills: Mapping[str, DrillRecord | None] = field(default_factory=dict)
    drill_results: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)
    #: route -> its versions rolled off, replaced whole (None: none left)
    rolled_off: Mapping[str, tuple[RolledOff, ...] | None] = field(default_factory=dict)
    #: the routes of the file whose identities this change records (theirs go last when the
    #: identities in all are past MAX_IDENTITIES_ALL); changes nothing on its own
    named: frozenset[str] = frozenset()
    #: the (route, version) pairs that file serves: kept past both bounds before any other
    #: (the oldest recorded is often a live stable: dropped, its name would take any artifact)
    serving: frozenset[tuple[str, str]] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.kills or self.overrides or self.history or self.progress
                    or self.identities or self.epoch is not None or self.approvals
                    or self.drills or self.drill_results or self.rolled_off)


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    if not changes and type(base) is dict:
        return base  # (nothing changed: shared, as documents share what they do not change)
    out = dict(base)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def apply_change(doc: StateDoc, change: Change, generation: int | None = None,
                 writer: str = "") -> StateDoc:
    """The next document: `change` applied to `doc` at `generation` (default: the next).

    The one place the rule lives: the generation moves on; a new kill flag (generation 0)
    and every appended history entry are stamped with it; a route's history keeps its
    newest MAX_HISTORY entries, and its identities the newest MAX_IDENTITIES; the write
    gets an id of its own (`writes`, naming `writer`: writeids.new_write), and a kill it
    lifts is recorded (`lifted`)."""
    gen = doc.generation + 1 if generation is None else generation
    if gen <= doc.generation:
        raise ValueError(f"generation {gen} does not move past {doc.generation}")
    write = new_write(gen, writer)
    kills = _merged(doc.kills, {k: (copied(f, generation=gen, write=write) if f is not None
                                    and f.generation == 0 else f)
                                for k, f in change.kills.items()})
    history = dict(doc.history)
    for route, entries in change.history.items():
        stamped = tuple(copied(e, generation=gen) for e in entries)
        history[route] = (*history.get(route, ()), *stamped)[-MAX_HISTORY:]
    identities = recorded(doc.identities, change.identities, change.named, change.serving,
                          history, doc.overrides, change.overrides)
    writes = trim_writes((*doc.writes, write))
    lifted, lifted_writes = doc.lifted, doc.lifted_writes
    if change.kills:
        lifted = lifted_after(lifted, doc.kills, change.kills)
        lifted_writes = lifted_writes_after(lifted_writes, doc.kills, change.kills)
    # (with_changes: dataclasses.replace's result, in fewer instructions: every write's)
    return doc.with_changes(generation=gen, kills=kills, writes=writes, lifted=lifted,
                            lifted_writes=lifted_writes,
                            overrides=_merged(doc.overrides, change.overrides),
                            history=history, progress=_merged(doc.progress, change.progress),
                            identities=identities,
                            epoch=doc.epoch if change.epoch is None else change.epoch,
                            lineage=doc.lineage if change.lineage is None
                            else dict(change.lineage),
                            approvals=_merged(doc.approvals, change.approvals),
                            drills=_merged(doc.drills, change.drills),
                            drill_results=_merged(doc.drill_results, change.drill_results),
                            rolled_off=_merged(doc.rolled_off, change.rolled_off)
                            if change.rolled_off else doc.rolled_off)
