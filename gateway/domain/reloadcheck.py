"""Whether a running gateway refuses a config file: the one decision its reload makes
(control/confighistory.py, from the state document) and `killgate diff` makes before a
merge (cli/diffchecks.py, from /v1/status). Both build the same `ReloadFacts` and call
`reload_problems`, so what diff says a reload would refuse is what the reload refuses.

The rules (each the domain's: configrecord.py, droppedlatch.py): a known version name given
another artifact; a version a latched override serves (its stable, a weight > 0) missing
from the file; and, for a reload (not a start), a route in force that an override latches
missing from the file (dropped or renamed). An open drill's rollback over no latch of the
route's own does not hold its route (the drill's restore undoes it, route or no route);
one over an operator's latch does (the restore puts that latch back). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config import RouteConfig
from gateway.domain.configrecord import identity_problems, latch_problems
from gateway.domain.drills import drill_only_latch
from gateway.domain.droppedlatch import dropped_latched, with_running
from gateway.domain.statedoc import RouteOverride, StateDoc

__all__ = ["ReloadFacts", "facts_from_doc", "reload_problems"]


@dataclass(frozen=True)
class ReloadFacts:
    """What a reload is judged against."""

    #: every override latched (on a route in force or not), by route name
    overrides: Mapping[str, RouteOverride]
    #: the routes whose override is an open drill's over no latch of their own
    drill_only: frozenset[str]
    #: route -> version -> {"artifact", ...}: the artifacts the gateway knows
    identities: Mapping[str, Mapping[str, Mapping[str, Any]]]
    #: the names of the routes in force; None for a start (nothing is dropped by one)
    running: tuple[str, ...] | None


def facts_from_doc(doc: StateDoc, running: Iterable[RouteConfig] | None) -> ReloadFacts:
    """The facts as the gateway holds them: its state document and the config in force."""
    rcs = None if running is None else list(running)
    known = doc if rcs is None else with_running(doc, rcs)
    return ReloadFacts(
        dict(doc.overrides), frozenset(n for n in doc.overrides if drill_only_latch(doc, n)),
        known.identities, None if rcs is None else tuple(rc.name for rc in rcs))


def reload_problems(facts: ReloadFacts, new: list[RouteConfig]) -> list[tuple[str, str]]:
    """(yaml path, message) for every reason the gateway refuses `new`; [] to apply it."""
    identities = {r: {v: dict(rec) for v, rec in vs.items()}
                  for r, vs in facts.identities.items()}
    problems = (identity_problems(StateDoc(identities=identities), new)
                + latch_problems(StateDoc(), new, facts.overrides))
    if facts.running is not None:
        held = {n: ov for n, ov in facts.overrides.items() if n not in facts.drill_only}
        problems += dropped_latched(held, facts.running, new)
    return problems
