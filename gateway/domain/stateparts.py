"""The values a state document holds: kill flags, overrides, history, progress, drills.

Owns each part's frozen value type and its small rules (a kill's key and identity, a
flag as answers show it, `plain`: a flat value as a dict) and the bounds a document's
numbers keep (`Generation`). Pure data, no I/O; `domain.statedoc` builds the document
from them and re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from typing_extensions import TypedDict  # pydantic validates typing's only from 3.12

from gateway.domain.slotted import fast_init, plainer

__all__ = [
    "MAX_GENERATION",
    "DrillRecord",
    "Generation",
    "HistoryEntry",
    "KillFlag",
    "KillScope",
    "Progress",
    "RolledOff",
    "RouteOverride",
    "kill_key",
    "plain",
]

#: the largest generation a document may carry: exact as a float (metrics) and in
#: JavaScript (the console); a real fleet never comes near it
MAX_GENERATION = 2 ** 53 - 1
Generation = Annotated[int, Field(ge=0, le=MAX_GENERATION)]

KillScope = Literal["global", "route", "version"]

#: the parts' validation: a field this version does not know is an error (a newer version
#: wrote it: statedoc.NewerDocument), never silently dropped (see StateDoc.format)
_KNOWN = ConfigDict(extra="forbid")


def plain(obj: Any) -> dict[str, Any]:
    """A flat dataclass (slots, plain values) as a dict; dict values are copied.

    `dataclasses.asdict` recurses and deep-copies, ~10 times slower, and this runs on every
    state change (the document is serialized to be committed and snapshotted). By a
    function written out for its class (slotted.plainer: one dict display)."""
    cls = type(obj)
    fn = _PLAINERS.get(cls)
    if fn is None:
        fn = _PLAINERS[cls] = plainer(cls)
    return fn(obj)


#: class -> its `plain` (made at its first use)
_PLAINERS: dict[type, Callable[[Any], dict[str, Any]]] = {}


def kill_key(scope: str, route: str | None = None, version: str | None = None) -> str:
    if scope == "global":
        return "global"
    if scope == "route":
        return f"route:{route}"
    return f"version:{route}:{version}"


@fast_init
@dataclass(frozen=True, slots=True)
class KillFlag:
    __pydantic_config__ = _KNOWN  # (a field a newer version added: statedoc.NewerDocument)

    scope: KillScope
    route: str | None
    version: str | None
    actor: str
    reason: str
    time: str
    generation: Generation
    abort_inflight: bool = True
    #: the write that made this flag ("<generation>:<write id>", stamped with the
    #: generation; "" from a version before it): which kill an unkill lifted (writeids.py)
    write: str = ""

    @property
    def key(self) -> str:
        return kill_key(self.scope, self.route, self.version)

    def ident(self) -> str:
        """Which kill this is: the write that made it (its generation, from a version
        before write ids); an abort_inflight upgrade keeps it, a new kill has another.
        /v1/status shows it as `id`, and an unkill may name it (`kill`)."""
        return self.write or str(self.generation)

    def public(self) -> dict[str, Any]:
        """The flag as API answers and audit events show it (its write id is bookkeeping)."""
        out = plain(self)
        del out["write"]
        return out


@fast_init
@dataclass(frozen=True, slots=True)
class HistoryEntry:
    __pydantic_config__ = _KNOWN  # (a field a newer version added: statedoc.NewerDocument)

    stable: str
    time: str
    actor: str
    reason: str
    url: str | None = None
    artifact: str | None = None
    generation: Generation = 0


@fast_init
@dataclass(frozen=True, slots=True)
class RouteOverride:
    """A latched runtime override of a route (rollback / promote / weights / auto)."""

    # (and no NaN or infinite weight: StateDoc's own setting does not reach a nested
    # type's, and a signed document with {"v1": NaN} was taken: review impkill8)
    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)

    stable: str | None
    weights: dict[str, float]
    actor: str
    reason: str
    time: str
    kind: str


@fast_init
@dataclass(frozen=True, slots=True)
class RolledOff:
    """A version a rollback took off its route (domain/rolledoff.py): never again the
    target of a rollback without `to` or of an automatic one while the route's config has
    it as recorded here (same url and artifact), until an operator names it (promote,
    weights, rollback --to)."""

    __pydantic_config__ = _KNOWN  # (a field a newer version added: statedoc.NewerDocument)

    version: str
    url: str | None
    artifact: str | None
    time: str
    actor: str
    kind: str  # "rollback" | "auto_rollback"


class Progress(TypedDict, total=False):
    """A route's progressive delivery (gateway/rollout.py); a dict, typed for validation.

    `state` stays a plain string and unknown keys are kept: a newer writer's additions must
    not make an older instance read the whole document as invalid, nor be dropped by it."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    canary: str
    step: Annotated[int, Field(ge=0)]
    since: float
    state: str
    #: what holds the rollout (paused while it stands): a kill ("global", "route" or
    #: "version:<name>"), "override" or "weight" (the file's weight 0 for the canary); its
    #: step starts again when that ends
    held: str
    #: the steps (percentages) the rollout's `step` indexes: a reload may change the file's
    #: (rolloutsteps.step_index)
    steps: list[float]
    #: the canary's url and artifact when its rollout started: a config giving it another
    #: is another deployment, rolled out anew (rolloutsteps.rolling); absent in older records
    url: str
    artifact: str | None


@fast_init
@dataclass(frozen=True, slots=True)
class DrillRecord:
    """An open recovery drill (domain/drills.py): the route's state when it started, and
    every change it made, so a restore undoes exactly those (also after the drill process
    died). `fault`: the drill-scoped fault in force ({"version", "expires"}), met only by
    requests whose drill token carries this drill's `nonce`. `made`: how many changes it
    made (kills, rollbacks, faults), `kept`: what its restore left because someone changed
    it meanwhile; both outlive the restore, for its end to check a "passed" against
    (drillfinish.py; a record an older version wrote says 0 and nothing)."""

    __pydantic_config__ = _KNOWN  # (a field a newer version added: statedoc.NewerDocument)

    id: str
    kind: str
    route: str
    version: str | None
    actor: str
    started: str
    deadline: float  # unix time: past it, the drill is overdue
    before: dict[str, Any]
    injected: tuple[dict[str, Any], ...] = ()
    fault: dict[str, Any] | None = None
    restored: bool = False
    nonce: str = ""
    made: int = 0
    kept: tuple[str, ...] = ()
