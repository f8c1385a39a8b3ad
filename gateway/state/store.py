"""What a state store offers, by concern.

Owns the store protocols: `StateStore` (the document: load, poll, commit, pushes) and
`Store`, all of them, which both backends fulfil (the others, `FleetStore`,
`IdempotencyStore`, `StatsStore`, `AuditStore`, are state/storeports.py's).
Parts of the gateway take the narrowest one they use. Also `Loaded` (a document as read,
verified or refused) and `decode_doc`. (The restrictive merge that re-seeds a store:
state/reseedmerge.py.) Pure apart from the protocol declarations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic_core import PydanticSerializationError, to_json

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.state.signing import Cause
from gateway.state.storeports import AuditStore, FleetStore, IdempotencyStore, StatsStore

if TYPE_CHECKING:
    pass

__all__ = [
    "MAX_DOC_BYTES",
    "PUSH_INLINE_BYTES",
    "Ack",
    "AuditStore",
    "FleetStore",
    "IdempotencyStore",
    "Loaded",
    "OnUnverified",
    "PushNewer",
    "PushNotRead",
    "Replicas",
    "StateStore",
    "StatsStore",
    "Store",
    "decode_doc",
    "encode_doc",
    "ignore_unverified",
    "legacy_doc",
]

class OnUnverified(Protocol):
    """(kind, problem, which, cause) → None: told about data that failed verification
    (which=None; `cause`: one of signing.CAUSES, from the exception raised: cause_of), or
    that verified only with the previous key (which="previous", problem empty)."""

    def __call__(self, kind: str, problem: str, which: str | None,
                 cause: Cause = "other") -> None: ...


def ignore_unverified(kind: str, problem: str, which: str | None,
                      cause: Cause = "other") -> None:
    return None


@dataclass(frozen=True, slots=True)
class Ack:
    """An instance says it enforces `generation` (a signed heartbeat)."""

    instance: str
    generation: int
    config: str = ""


@dataclass(frozen=True, slots=True)
class Replicas:
    """The replicas in sync with the store's primary (`connected`; state/redisreplicas.py),
    or None and `why` that is not known."""

    connected: int | None
    why: str | None = None


@dataclass(frozen=True, slots=True)
class PushNotRead:
    """A pushed document too large to verify on the loop that serves requests (over
    PUSH_INLINE_BYTES): the listener re-reads the store instead (throttled)."""

    size: int


@dataclass(frozen=True, slots=True)
class PushNewer:
    """A pushed document that verified but that a newer version of killgate wrote (not
    applied here): the listener judges the store at the next poll, as it judges a changed
    generation (a replay after a rollback is repaired, a newer writer's state refused,
    loudly). Dropped, one replayed at the generation the key already said was noticed by
    no poll (it compares the generation and head keys alone) until the next write."""

    generation: int | None


@dataclass(frozen=True, slots=True)
class Loaded:
    """The store's state as read: a verified document, or why there is none."""

    doc: StateDoc | None  # verified (None: the store holds none, or it was refused)
    token: str | None  # the compare-and-set token: the stored generation (None: empty)
    problem: str | None = None  # why what the store holds was refused
    #: the bytes of a refused document: in the format before signing (no signature line)
    #: the one source a re-seed may take kills from (a migration), and nothing else; parsed
    #: only then (`legacy_doc`), never on the event loop (whoever wrote it chose its size)
    refused: bytes | None = None
    #: events in the store's audit trail as read with it (-1: not read). 0 with no problem:
    #: the store lost its trail too (a restart without persistence, FLUSHALL), so a re-seed
    #: cannot flood one and never backs off (reseed.py's _may_repair)
    trail: int = -1
    #: why `problem` (one of signing.CAUSES): the refusal's, not read from its wording
    cause: Cause = "other"
    #: the refused document verified, and a newer version wrote it (statedoc.NewerDocument):
    #: no forgery to count nor to repair, and never written over
    newer: bool = False
    #: ... and the generation it states (NewerDocument.generation)
    newer_generation: int | None = None
    #: the verified document is signed with our previous key, and the key order proves us
    #: at rotation step 2 (a local store: always): re-signed at once (an audited re-seed),
    #: so that step 3 never finds the old key's document after no write (reseed.py)
    old_key: bool = False

    @property
    def empty(self) -> bool:
        return self.token is None and self.problem is None and self.doc is None

    @property
    def trusted(self) -> bool:
        """A verified document whose generation is the one the store compares against."""
        return self.doc is not None and self.token == str(self.doc.generation)


#: a stored or pushed document larger than this is refused unread: whoever can write to
#: the store must not make every instance read, verify or parse hundreds of megabytes on
#: the loop the data plane runs on (a real document is kilobytes; 100 routes with full
#: histories are a few megabytes)
MAX_DOC_BYTES = 16 * 1024 * 1024
#: a pushed document larger than this is not verified as it arrives (a flood of forged
#: ones, 8 MB each, made every request ~6 times slower, p99 25 ms: their MACs ran on the
#: loop): the store is re-read instead, at most a few times a second (sync.py)
PUSH_INLINE_BYTES = 1024 * 1024


def legacy_doc(raw: bytes) -> StateDoc | None:
    """`raw` as a document in the format before signing, or None."""
    if raw.startswith(b"KGS1 "):
        return None
    try:
        return decode_doc(raw)
    except ValueError:
        return None


def encode_doc(plain: dict[str, Any]) -> bytes:
    """A document's JSON form (`StateDoc.to_json`'s dict) as the bytes a store signs and
    keeps: pydantic-core's writer, compact and UTF-8 (every commit: a third of json.dumps's
    instructions, callgrind); json.dumps's, as before, when that one refuses the value (a
    lone surrogate in a reason). Either way `decode_doc` reads the same document back."""
    try:
        return to_json(plain)
    except (PydanticSerializationError, ValueError, TypeError):
        return json.dumps(plain).encode()


def decode_doc(body: bytes) -> StateDoc:
    """A state document from its (verified) JSON bytes; ValueError when it is not one."""
    doc = StateDoc.from_json_bytes(body)
    if doc is not None:
        return doc  # (the kill path's decode: read in one pass)
    try:
        return StateDoc.from_json(json.loads(body))
    except RecursionError:
        raise ValueError("not a valid state document: nested too deeply") from None


class StateStore(Protocol):
    backend: str
    #: True when the store pushes changes and acks (redis pub/sub); False: poll only.
    pushes: bool

    async def open(self) -> None:
        """Connect and start watching; raises StoreUnavailable. Called again to recover."""

    async def reset(self) -> None:
        """Stop watching after an error (writes may go on); `open` resumes."""

    async def kept(self) -> None:
        """Instead of `reset` and `open` when the store answered with a document this
        instance refused: raises StoreUnavailable if the watch `open` made was lost (or
        the store moved: the sentinels name another master), or if it does not answer
        (redis: a PING on the subscription). Its silence is not judged: no heartbeat is
        sent while not synced (it counts from now)."""

    async def close(self) -> None: ...

    async def load(self, on_loaded: Callable[[Loaded], None] | None = None) -> Loaded:
        """The whole state as stored: verified, refused (with the problem) or absent.
        `on_loaded` is told the same as early as the store can (redis: as its answer is
        read, a loop turn before this returns); it must not raise."""

    async def poll(self) -> tuple[str | None, str | None]:
        """The stored generation and the audit head the store names (hints, not verified;
        None: none). A head that is not the one of a document we judged means another
        document at the same generation: a write on another branch of the history."""

    async def commit(self, expected: str | None, doc: StateDoc, draft: AuditDraft | None,
                     chain_from: str | None = None,
                     on_stored: Callable[[StateDoc], None] | None = None,
                     based_on: StateDoc | None = None,
                     onto: StateDoc | None = None,
                     pinned: StateDoc | None = None) -> dict[str, Any] | None:
        """Replace the state if the stored generation is still `expected` (None: none);
        with `based_on` (the verified document `load` just returned, whose generation key
        disagreed with it), if the stored document is still that one, whatever the key says;
        with `pinned` (the verified document `load` just returned), only if the stored
        document is still that one too (an instance whose state is not known to be the
        fleet's: another document at the same generation may be one it cannot verify).
        `onto`: the verified document the store holds, `behind` what this instance saw
        (a re-seed): the event continues the head it anchors, the store's trail, while the
        store's head key still names it (else, as ever, the newest head we saw).

        The audit event (if any) is chained, keyed and stored first, atomically with the
        state; with no trail stored, it continues from `chain_from` (the head this instance
        anchored before the store lost its trail). Returns the sealed event. Raises
        StoreConflict when `expected` is stale, AuditError when the audit event cannot be
        stored (nothing changes then). `on_stored` is told the document as stored (its
        `audit_head` set) once the store confirms it, as early as the store can say so
        (redis: as its answer is read, before this returns); it must not raise.
        """

    def anchored(self, doc: StateDoc) -> None:
        """`doc`, verified, is the newest document this instance held before (its
        snapshot): the next event continues the audit head it anchors unless the store's
        document is newer (by generation, then audit position). A store put back to an
        earlier document of that generation, its later events deleted, is then seen as
        what it is (a break in the chain, `audit verify`), not continued. Against another
        document (older, or another write: the store lost what we held, and we re-seed
        it) the store's verified head stands: the re-seed continues the trail there and
        names the head lost (`anchored_head`)."""

    def behind(self, doc: StateDoc | None) -> str | None:
        """The newest audit head this instance saw that the verified `doc` (the store's;
        None: the store holds none) lacks: `doc` is older than the document that named it
        (by generation, then audit position), and at that generation the same write with
        fewer events (the store put back to before events that changed no state: a backup
        restored, events cut). None: `doc` is not behind (another write at that
        generation is a branch, merged as such), or the store continues what it holds
        whatever this instance saw (local)."""

    def listen(self, fn: Callable[[StateDoc | Ack | PushNotRead | PushNewer], None]) -> None:
        """Hand pushed (verified) changes to `fn` as they arrive (a store that does not
        push ignores this; its `watch` returns the changes it finds)."""

    async def watch(self, timeout: float) -> list[StateDoc | Ack]:
        """Changes since the last call, waiting up to `timeout` for the first; raises
        StoreUnavailable when the store's push channel is lost."""

    async def replicated(self, replicas: int, timeout: float, generation: int,
                         fence: bool = False) -> int:
        """After a commit of `generation`: wait up to `timeout` until `replicas` replicas
        hold it; returns how many confirmed. `fence`: no commit of ours made it (a no-op
        confirms the store's `generation`)."""


class Store(StateStore, FleetStore, IdempotencyStore, StatsStore, AuditStore, Protocol):
    """Everything a backend provides."""
