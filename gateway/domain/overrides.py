"""Runtime overrides of a route: rollback, promote, weights, release (CONTRACT §4).

Pure state transitions: each function takes the current `StateDoc` and the route's
config and returns the `Change` to apply (`statedoc.apply_change` makes the next
document), None when there is nothing to change, or raises a DomainError (unknown
version, conflicting state, invalid change). An override is latched: config reloads never undo it; only
`release` hands the route back to the file. Rollback and promote append to the route's
append-only history, with the version's url and artifact; a rollback refuses a target
whose configured artifact differs from the one recorded (versions are immutable), and
records the versions it takes off, which a later rollback without `to` never goes back to
until an operator names them (domain/rolledoff.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gateway.config import RouteConfig
from gateway.config_types import weight_problem
from gateway.domain import rolledoff
from gateway.domain.rolloutsteps import progressive_weights
from gateway.domain.statedoc import MAX_HISTORY, Change, HistoryEntry, RouteOverride, StateDoc
from gateway.errors import ConflictingState, InvalidChange, UnknownVersion

__all__ = [
    "MAX_HISTORY",
    "effective_stable",
    "promote",
    "release",
    "release_warnings",
    "rollback",
    "set_weights",
    "with_stable",
]


def effective_stable(doc: StateDoc, rc: RouteConfig) -> str:
    ov = doc.overrides.get(rc.name)
    if ov is not None and ov.stable and rc.version(ov.stable) is not None:
        return ov.stable
    return rc.stable


def _version(rc: RouteConfig, name: str) -> Any:
    v = rc.version(name)
    if v is None:
        raise UnknownVersion(rc.name, name, [v.name for v in rc.versions])
    return v


def _check_identity(doc: StateDoc, rc: RouteConfig, name: str) -> None:
    v = _version(rc, name)
    rec = doc.identities.get(rc.name, {}).get(name)
    if rec and rec.get("artifact") and v.artifact and rec["artifact"] != v.artifact:
        raise ConflictingState("artifact_changed",
                               f"version {name!r} was recorded with artifact {rec['artifact']} but the "
                       f"config now says {v.artifact}; a version is immutable, so this is not "
                       "the version that was known good")


def with_stable(rc: RouteConfig, stable: str, kind: str, actor: str, reason: str,
                now: str) -> Change:
    """Latch `stable` with 100% of the route's traffic, recorded in its history; any
    progressive rollout of the route ends."""
    v = _version(rc, stable)
    weights = {x.name: (100.0 if x.name == stable else 0.0) for x in rc.versions}
    ov = RouteOverride(stable, weights, actor, reason, now, kind)
    entry = HistoryEntry(stable, now, actor, reason, v.url, v.artifact)
    return Change(overrides={rc.name: ov}, history={rc.name: (entry,)},
                  progress={rc.name: None})


def rollback(doc: StateDoc, rc: RouteConfig, to: str | None, actor: str, reason: str,
             now: str) -> Change:
    current = effective_stable(doc, rc)
    named = () if to is None else (to,)
    if to is None:
        ov = doc.overrides.get(rc.name)
        left = doc.previous_stable(rc.name, current)
        if ov is not None and ov.kind == "rollback" and left is not None:
            # its previous stable is the version it was rolled off: a rollback run again
            # (a tired retry, a second operator) would put the bad version back, or roll
            # back one more (not an auto_rollback: it takes a canary out, the stable and
            # history stay as they were)
            raise ConflictingState("rolled_back", (
                f"route {rc.name!r} was rolled back to {current!r} by {ov.actor}; a rollback "
                f"without 'to' is not run again on it ({left.stable!r}, the version it left, "
                "stays off): name the version with 'to', or lift the rollback with release"))
        prev = rolledoff.previous_stable(doc, rc, current)
        if prev is None:
            off = rolledoff.held_off(doc, rc)
            skipped = sorted({e.stable for e in doc.history.get(rc.name, ())
                              if e.stable != current and e.stable in off})
            raise ConflictingState("no_previous_stable", (
                f"route {rc.name!r} has no earlier stable version in its history (its "
                f"stable, {current!r}, is the first); name one with 'to' (naming {current!r} "
                "keeps it and takes the other versions' traffic off)") if not skipped else (
                f"route {rc.name!r} has no earlier stable version to roll back to: "
                + ", ".join(f"{n!r} was rolled off by {off[n].kind} ({off[n].actor}, "
                            f"{off[n].time})" for n in skipped)
                + "; name the version with 'to', or bring one back with promote"))
        if rc.version(prev.stable) is None:
            # (not "route has no version 'v0'": the operator named none; nor one further
            # back, which the route's previous known-good is not either)
            raise ConflictingState("no_previous_stable", (
                f"route {rc.name!r} has no earlier stable version to roll back to: the "
                f"previous stable, {prev.stable!r} (stable since {prev.time}), is no longer "
                "in the config; name a version with 'to'"))
        to = prev.stable
    _check_identity(doc, rc, to)
    kill = rolledoff.killed_by(doc, rc.name, to)
    if kill is not None:
        raise ConflictingState("target_killed", _target_killed(doc, rc, to, kill))
    ch = with_stable(rc, to, "rollback", actor, reason, now)
    serving = {n for n, w in _weights_now(doc, rc).items() if w > 0} | {current}
    if (made := rolledoff.drill_made(doc, rc.name)) is not None:
        # taking over a drill's rollback (which records nothing): what served before the
        # drill is what this rollback takes off (unrecorded, it would be a spare again)
        b, prog = made.get("before"), made.get("progress")
        st, ws = (b.get("stable"), b.get("weights")) if isinstance(b, dict) else (None, None)
        if not isinstance(ws, dict):
            ws = progressive_weights(rc, prog if isinstance(prog, dict) else None) or {
                v.name: v.weight for v in rc.versions}
        serving |= {n for n, w in ws.items() if isinstance(w, int | float) and w > 0}
        serving.add(st if isinstance(st, str) and st else rc.stable)
    return dataclasses.replace(ch, rolled_off=rolledoff.recorded(
        doc, rc, serving - {to}, "rollback", actor, now, named))


def _target_killed(doc: StateDoc, rc: RouteConfig, to: str, key: str) -> str:
    flag = doc.kills[key]
    return (f"route {rc.name!r} is not rolled back to {to!r}: the kill of version {to!r} "
            f"stands ({flag.actor}: {flag.reason!r}), so the route would serve nothing; "
            f"nothing was changed. Lift the kill first (killgate unkill --route {rc.name} "
            f"--version {to}), or roll back to another version (--to)")


def _weights_now(doc: StateDoc, rc: RouteConfig) -> dict[str, float]:
    """The route's weights as routing has them (the override's, a progressive rollout's
    step, else the file's)."""
    ov = doc.overrides.get(rc.name)
    if ov is not None:
        return dict(ov.weights)
    w = progressive_weights(rc, doc.progress.get(rc.name))
    return w if w is not None else {v.name: v.weight for v in rc.versions}


def promote(doc: StateDoc, rc: RouteConfig, version: str, actor: str, reason: str,
            now: str) -> Change:
    _check_identity(doc, rc, version)
    ch = with_stable(rc, version, "promote", actor, reason, now)
    return dataclasses.replace(ch, rolled_off=rolledoff.cleared(doc, rc, (version,)))


def _finite(w: float) -> bool:
    """Whether a float holds `w` as a finite number (JSON has integers of any length:
    math.isfinite of one beyond a float's range raises)."""
    try:
        return math.isfinite(w)
    except OverflowError:
        return False


def set_weights(doc: StateDoc, rc: RouteConfig, weights: Any, actor: str, reason: str,
                now: str, kind: str = "weights") -> Change:
    if not isinstance(weights, dict) or not weights:
        raise InvalidChange("'weights' must be an object of version: weight")
    out: dict[str, float] = {v.name: 0.0 for v in rc.versions}
    for name, w in weights.items():
        _version(rc, name)
        if isinstance(w, bool) or not isinstance(w, int | float) or not _finite(w) or w < 0:
            raise InvalidChange(f"weight of {name!r} must be a finite number >= 0")
        problem = weight_problem(float(w))
        if problem is not None:
            raise InvalidChange(f"weight of {name!r} {problem}")
        out[name] = float(w)
    if sum(out.values()) <= 0:
        raise InvalidChange("at least one weight must be > 0")
    stable = effective_stable(doc, rc)
    return Change(overrides={rc.name: RouteOverride(stable, out, actor, reason, now, kind)},
                  rolled_off=rolledoff.cleared(doc, rc, (n for n, w in out.items() if w > 0)))


def release(doc: StateDoc, rc: RouteConfig, actor: str, reason: str, now: str) -> Change:
    ov = doc.overrides.get(rc.name)
    if ov is None:
        raise ConflictingState("not_latched", f"route {rc.name!r} has no runtime override")
    history: dict[str, tuple[HistoryEntry, ...]] = {}
    if ov.stable != rc.stable:
        v = rc.version(rc.stable)
        assert v is not None
        history[rc.name] = (HistoryEntry(rc.stable, now, actor, f"release: {reason}", v.url,
                                         v.artifact),)
    # a rollback's canary rolls out again from the first step of its progressive rollout
    # (a new rollout: rolloutsteps.progressive_weights), never at the file's weight at once;
    # so does one a failed analysis rolled back before a `weights` override replaced that
    # rollback (left `failed`, it had the file's weight for good, never stepped again)
    prog = doc.progress.get(rc.name)
    restart = prog is not None and (ov.kind in ("rollback", "auto_rollback")
                                    or prog.get("state") == "failed")
    return Change(overrides={rc.name: None}, history=history,
                  progress={rc.name: None} if restart else {})


def release_warnings(doc: StateDoc, rc: RouteConfig) -> list[str]:
    """What a release (made: `doc` has no override of the route) puts back that a rollback
    rolled off as bad: the file's stable, or a version the file gives traffic. Said, not
    refused: a release is how an operator returns to the file."""
    off = rolledoff.held_off(doc, rc)
    weights = _weights_now(doc, rc)
    total = sum(weights.values()) or 1.0
    out = []
    for name, rec in sorted(off.items()):
        pct = 100.0 * weights.get(name, 0.0) / total
        if name != rc.stable and pct <= 0:
            continue
        role = "the route's stable (the file's) again" if name == rc.stable else "traffic again"
        out.append(f"{name} was rolled off by {rec.actor} ({rec.kind}) at {rec.time}: the "
                   f"release makes it {role}, {pct:g} % of the route's traffic; if it is "
                   f"still bad, roll back naming a good version (killgate rollback {rc.name} "
                   "--to VERSION)")
    return out
