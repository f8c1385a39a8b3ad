"""The narrow interfaces the admin API is given (STYLE: give a part only what it uses).

Owns the `Protocol`s the admin handlers call: writing state with its audit event and
waiting for the receipt, reading the audit trail, idempotency records, the fleet view,
readiness, counters and the shadow promotion gate. The composition root hands in objects
that satisfy them; nothing here imports `app`, `state` or `control`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from gateway.config import RouteConfig
from gateway.configfile import LoadedConfig
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change as StateChange
from gateway.domain.statedoc import StateDoc

__all__ = [
    "AlertInbox",
    "AuditReader",
    "AuditTrimmer",
    "Change",
    "ChangeCheck",
    "Counters",
    "Current",
    "Describe",
    "FleetView",
    "Idempotency",
    "LocalKiller",
    "MetricsPage",
    "Readiness",
    "ShadowGate",
    "StateWriter",
    "Voucher",
]

Change = Callable[[StateDoc], StateChange | None]  # None: nothing to change
Describe = Callable[[StateDoc, StateDoc], AuditDraft]
#: why a change may not be applied to a document (None: it may)
ChangeCheck = Callable[[StateDoc, StateChange], str | None]
#: the /metrics page for an Accept header: (its bytes, a part at a time, taken from the
#: values as they are at the call; content type)
MetricsPage = Callable[[str | None], tuple[Iterator[bytes], str]]


class LocalKiller(Protocol):
    """Emergency local kills (state.localmerge.LocalKillKeeper): taken while the store
    cannot commit, enforced here at once, merged into the store when it answers."""

    async def take(self, scope: str, route: str | None, version: str | None, actor: str,
                   reason: str, abort_inflight: bool,
                   evidence: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Journal and enforce a kill on this instance: (its entry, whether new)."""

    def public(self) -> dict[str, Any]:
        """The local kills not yet in the store, as /v1/status shows them."""

    def journal_file(self) -> str | None:
        """The journal this process keeps its local kills in (None: none), as it started:
        the state section, snapshot_path with it, applies at a restart."""


class StateWriter(Protocol):
    """Changes to the replicated state, each with its audit event (state.sync.Sync)."""

    async def write(self, change: Change,
                    describe: Describe) -> tuple[StateDoc, dict[str, Any] | None]:
        """Apply `change` atomically with the event `describe` returns; (new doc, event),
        event None when nothing changed. `change` raises a DomainError to refuse (checked
        again against the store when decided on a stale copy)."""

    async def receipt(self, generation: int, wait: float) -> dict[str, Any]:
        """Wait up to `wait` for every live instance to apply `generation`."""

    async def append_audit(self, draft: AuditDraft) -> dict[str, Any] | None:
        """Record an event without changing the state; None when the store holds none."""

    async def landed(self, write: str, generation: int) -> bool | None:
        """Whether a write whose commit's answer was lost is in the store's state (None:
        the store cannot say)."""

    def confirmed(self) -> bool:
        """Whether the state held was confirmed by the store recently (state/staleness.py:
        not, on an instance cut off from it)."""


class FleetView(Protocol):
    async def fleet(self) -> dict[str, dict[str, Any]]:
        """Live instances -> their generation, config digest, last heard."""

    def status(self) -> dict[str, Any]:
        """The store connection as this instance sees it."""


class AuditKeys(Protocol):
    """The audit MAC keys (gateway/state/signing.py's Keyring)."""

    @property
    def enabled(self) -> bool: ...

    def keys(self) -> dict[str, bytes]: ...


class AuditTrimmer(Protocol):
    """Audit retention's trim by hand (state.retention.AuditRetention)."""

    async def trim_now(self, draft: AuditDraft, dry_run: bool = False) -> dict[str, Any]:
        """Trim back to the bounds now (`draft`: the caller, reason, request its checkpoints
        record), or say how many events would go; DomainError to refuse."""


class Voucher(Protocol):
    """An operator's vouch for this instance's key (state.vouchwrite.VouchWrite)."""

    async def vouch(self, draft: AuditDraft) -> tuple[dict[str, Any], StateDoc,
                                                      dict[str, Any] | None]:
        """Clear the instance's "not known to be the fleet's" mark with an audited write;
        DomainError `nothing_to_vouch` without one, StoreUnverifiable over a document it
        cannot verify. (The answer's fields, the document written, its event.)"""


class AuditReader(Protocol):
    @property
    def audit_keys(self) -> AuditKeys: ...

    async def audit_head(self) -> str | None: ...

    async def audit_page(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]],
                                                                        str | None]: ...

    async def audit_newest(self, limit: int) -> tuple[str | None, list[dict[str, Any]],
                                                      str | None]: ...


class Idempotency(Protocol):
    async def idem_claim(self, key: str, record: dict[str, Any],
                         ttl: float) -> dict[str, Any] | None: ...

    async def idem_set(self, key: str, record: dict[str, Any], ttl: float) -> None: ...

    async def idem_renew(self, key: str, record: dict[str, Any], ttl: float) -> bool: ...

    async def idem_settle(self, key: str, record: dict[str, Any], ttl: float) -> bool: ...

    async def idem_take(self, key: str, mine: dict[str, Any], record: dict[str, Any],
                        ttl: float) -> bool: ...

    async def idem_release(self, key: str, mine: dict[str, Any] | None = None) -> None: ...


class Current(Protocol):
    """The config and state document in force (control.table.TableHolder)."""

    @property
    def loaded(self) -> LoadedConfig: ...

    @property
    def doc(self) -> StateDoc: ...


class Readiness(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def ready_reason(self) -> str | None: ...

    @property
    def draining(self) -> bool: ...


class Counters(Protocol):
    def inc(self, name: str, labels: tuple[str, ...] = (), by: float = 1.0,
            label_names: tuple[str, ...] = ()) -> None: ...

    def set(self, name: str, value: float, labels: tuple[str, ...] = (),
            label_names: tuple[str, ...] = ()) -> None: ...


class AlertInbox(Protocol):
    """Alertmanager's webhook (control.alerts.AlertReceiver)."""

    async def receive(self, body: Any, request_id: str, peer: str, trace_id: str = "",
                      caller: str = "") -> dict[str, Any]: ...


class ShadowGate(Protocol):
    """The shadow promotion gate (control.shadow.ShadowResults)."""

    async def gate_for(self, rc: RouteConfig) -> ChangeCheck | None:
        """For a write to `rc`: a check saying why a change would give the route's shadow
        traffic too early, read fresh from the store now; None when it is not gated."""
