"""What a reload is checked against beyond the recorded state: the config in force.

Routes a latched runtime override holds that a config change drops or renames
(`dropped_latched`), and the artifacts of the running versions (`with_running`).

An override (rollback, promote, weights, automatic rollback) is keyed on its route's name.
A file without that name takes the route's requests out of the override: a route under
another name matching them (a rename) serves at the file's weights, the version a rollback
took the route off included, and the override itself can no longer be released (the API
knows only the routes of the config). So a reload dropping such a route is refused, as one
dropping a version an override serves is (`configrecord.latch_problems`), naming `release` as
the way out. Only a change is judged (the running config had the route): a start on such a
file is not refused for it (an override left over from before cannot lock the fleet out of
starting; its route then serves nothing under that name). Pure.

Versions are immutable by artifact: a reload giving a known version name another artifact is
refused against the identities recorded in the state. A reload made while the store could not
be written left its versions unrecorded (`config_record_skipped`), and the next file could
then give a running version another build; the running versions' artifacts count as known
too (as `killgate diff` counts them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.config import RouteConfig
from gateway.domain.configrecord import latch_problems
from gateway.domain.statedoc import RouteOverride, StateDoc

__all__ = ["dropped_latched", "taken_back", "with_running"]


def with_running(doc: StateDoc, running: Iterable[RouteConfig]) -> StateDoc:
    """`doc` whose identities also hold the artifact of each running version the record
    lacks one for (the record, where it names one, stays what counts)."""
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for rc in running:
        known = doc.identities.get(rc.name, {})
        for v in rc.versions:
            rec = known.get(v.name)
            if v.artifact and not (rec and rec.get("artifact")):
                merged.setdefault(rc.name, dict(known))[v.name] = {
                    "url": v.url, "artifact": v.artifact, "time": None}
    if not merged:
        return doc
    return dataclasses.replace(doc, identities={**doc.identities, **merged})


def dropped_latched(overrides: Mapping[str, RouteOverride], running: Iterable[str],
                    new: Iterable[RouteConfig]) -> list[tuple[str, str]]:
    """(yaml path, message) for every route named in `running` (the config in force) that
    `overrides` latches and the `new` routes lack."""
    names = {rc.name for rc in new}
    out = []
    for name in sorted(set(running) - names):
        ov = overrides.get(name)
        if ov is None:
            continue
        out.append(("routes",
                    f"route {name!r} is latched at runtime ({ov.kind} by {ov.actor}: "
                    f"{ov.reason!r}); a file without it takes its requests out of the "
                    "override (a route under another name that matches them serves at the "
                    "file's weights, the version rolled back from included): keep the route, "
                    f"or run `killgate release {name}` first"))
    return out


def taken_back(doc: StateDoc, running: Iterable[RouteConfig],
               before: Iterable[RouteConfig]) -> list[tuple[str, str]]:
    """(yaml path, message) for every version an override latched in `doc` serves that the
    config in force (`running`) lacks, when the config before its last reload (`before`)
    has them all and the reload changed nothing else (no other route; of the latched ones
    only their versions, stable and weights: `_only_versions_dropped`): the reload would have been refused
    had the override come first (a rollback made through an instance still on the old file
    while this one took up the new), and taking it back undoes nothing else. [] otherwise
    (nothing missing; `before` lacking some too; other routes changed with it: those stay,
    and the route serves nothing, as status says, until a release or a file with them)."""
    now, then = list(running), list(before)
    short = {rc.name for rc in now if latch_problems(doc, [rc])}
    if not short or latch_problems(doc, then) or not short <= {rc.name for rc in then}:
        return []
    if [rc for rc in now if rc.name not in short] != [rc for rc in then if rc.name not in short]:
        return []
    was = {rc.name: rc for rc in then}
    if any(not _only_versions_dropped(rc, was[rc.name]) for rc in now if rc.name in short):
        return []
    return latch_problems(doc, now)


def _only_versions_dropped(now: RouteConfig, then: RouteConfig) -> bool:
    """`now` is `then` but for versions it dropped or added, its stable and the weights:
    every other key of the route (its match, timeouts, shadow's drop_headers...) and every
    kept version's url, artifact and model are the same (a bypass closed or a backend moved
    off a host with the reload stays: taking it back would undo it)."""
    skip = {"versions": True, "stable": True}
    if now.model_dump(exclude=skip) != then.model_dump(exclude=skip):
        return False
    kept = {v.name: v for v in then.versions}
    return all(v.model_dump(exclude={"weight": True}) == kept[v.name].model_dump(
        exclude={"weight": True}) for v in now.versions if v.name in kept)
