"""The state store's errors: the branch of gateway/errors.py's tree under StateError.

Owns what a store call can end in: unreachable or unverifiable (retry later), a lost
compare-and-set (retry at once), a commit whose answer was lost (StoreOutcomeUnknown: it
may have landed), one not yet on enough replicas (NotDurable), a retry that found its first
attempt landed. Raised by state/ (which translates redis's own), mapped to HTTP by the admin
API. Imports only errors_base.py; import them from gateway.errors.
"""

from __future__ import annotations

from typing import Any

from gateway.errors_base import KillgateError

__all__ = ["EarlierLanded", "NotDurable", "PushesCut", "StateError", "StoreBusy",
           "StoreConflict", "StoreFromNewerVersion", "StoreOutcomeUnknown", "StoreRefusesWrites",
           "StoreUnavailable", "StoreUnverifiable"]


class StateError(KillgateError):
    pass


class StoreUnavailable(StateError):
    pass


class StoreUnverifiable(StoreUnavailable):
    """The store answers, but holds a document this instance cannot verify and will not
    write over (state/vouching.py's `_blind`): nothing was changed; not "cannot be reached"."""


class StoreFromNewerVersion(StoreUnverifiable):
    """The store holds a verified document a newer version of killgate wrote, which this
    one cannot apply without dropping what it does not know (statedoc.FORMAT's rule): not
    applied, nothing written over it (a write answers 503 state_from_newer_version)."""


class StoreBusy(StoreUnavailable):
    """Redis answers, but runs no command now: it is loading its dataset (-LOADING: just
    started or restarted, a replica in its full sync) or a Lua script runs past its time
    limit (-BUSY). Refused before it ran: nothing was changed. `type`: the admin API's
    error type for it (state_store_loading, state_store_busy); `retry_after`: the seconds
    its Retry-After says. Said as `audit_unavailable` before, an operator looked for a
    broken audit trail."""

    def __init__(self, type_: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.type = type_
        self.retry_after = retry_after


class StoreRefusesWrites(StoreBusy):
    """Redis answers, and its reads work, but it refuses every write: `-NOREPLICAS` (its own
    `min-replicas-to-write` counts fewer good replicas than it requires). Nothing was
    written; not a lost store (the sync loop stays synced by its reads: state/sync.py).
    Said as `audit_unavailable` and the store as lost before (found by revdurable)."""


class PushesCut(StoreUnavailable):
    """The store answers commands, but the subscription its pushes come by was refused or
    closed as it was made (CLIENT KILL TYPE pubsub, an ACL without its channels): the sync
    loop reads the store all the same, as its poll does, and subscribes again."""


class StoreConflict(StateError):
    pass


class StoreOutcomeUnknown(StoreUnavailable):
    """A write reached the store but its answer did not come back (timeout, reset): it may
    or may not have been applied. What the write would have made, when known: `doc` (the
    state document, its write id last in `writes`), `event` (its audit event) and `done`
    (the admin API's answer had it been confirmed), so a retry with its Idempotency-Key
    can ask the store whether it landed and answer as it would have."""

    doc: Any = None
    event: dict[str, Any] | None = None
    done: Any = None
    #: the request's Idempotency-Key now names the write (a retry with it resolves it)
    key_kept = False


class EarlierLanded(StateError):
    """A retry's write (after `outcome_unknown`) found the write it stands in for in the
    store's state: the first attempt's commit landed after the retry asked. Nothing was
    done by the retry; it answers with the first attempt's result."""


class NotDurable(StateError):
    """A change is committed on the primary (and in force) but fewer replicas than
    `state.min_replicas` confirmed it in time: a failover now could lose it."""

    def __init__(self, generation: int, confirmed: int, required: int, timeout: float) -> None:
        self.generation = generation
        #: the audit event of the change this call committed (None: a no-op confirming
        #: an earlier commit, e.g. a retry's): it is in force, and so is what it did
        self.event: dict[str, Any] | None = None
        self.doc: Any = None  # (with `event`: the state it committed)
        #: what the call would have answered (admin/writes.py Done), with `event`: its
        #: Idempotency-Key keeps it, and a retry answers with it once it is confirmed
        self.done: Any = None
        #: what the answer names, said in the 503 too (the error object's fields): a drill
        #: open's `drill`, for a caller that must close the drill it opened, and no other
        #: (control/drills.py `_close_undurable`, tests/test_drill_close_undurable_own.py)
        self.names: dict[str, str] = {}
        super().__init__(
            f"generation {generation} is in force, but {confirmed} of the {required} required "
            f"redis replicas confirmed it within {timeout * 1000:g} ms, so a failover now could "
            "lose it; retry the same call (it is idempotent) until it is confirmed. If retries "
            f"keep failing, the redis primary has fewer than {required} replica(s) attached "
            "(after a failover: until a replica rejoins it): check `INFO replication` "
            "(connected_slaves) on it and bring a replica back")
