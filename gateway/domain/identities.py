"""The version identities a state document keeps, and which go first past its bounds.

Owns MAX_IDENTITIES (per route) and MAX_IDENTITIES_ALL (over every route), and `recorded`:
a change's identities added to a document's, the oldest recorded dropped past each bound,
the versions the recording file serves and those the state says serve kept longest. Pure:
called by `domain.statedoc.apply_change` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.domain.stateparts import HistoryEntry, RouteOverride

__all__ = ["MAX_IDENTITIES", "MAX_IDENTITIES_ALL", "recorded"]

Identities = dict[str, dict[str, dict[str, Any]]]  # route -> version -> identity record

#: version identities kept per route, the oldest recorded dropped past it: without a bound, a
#: version name per build (a CI deploy) grew the document with every deploy for ever, past
#: MAX_DOC_BYTES (16 MiB; ~8,000 identities with 2 KB urls), where no instance can read the
#: state (its kills included). A name older than the newest MAX_IDENTITIES of its route is
#: no longer checked against its artifact.
MAX_IDENTITIES = 1000
#: version identities kept in all, over every route: the per-route bound did not bound the
#: number of routes, and a route removed from the config kept its identities for ever (one
#: route per pull request's preview grew the document as one version per build did). Past
#: it the oldest recorded go first, those of routes the recording file does not name (removed
#: ones) before those it names. 4,000 is < 8 MiB with 2 KB urls, half of MAX_DOC_BYTES.
MAX_IDENTITIES_ALL = 4000


def recorded(identities: Mapping[str, Mapping[str, dict[str, Any]]],
             added: Mapping[str, Mapping[str, dict[str, Any]]], named: frozenset[str],
             serving: frozenset[tuple[str, str]],
             history: Mapping[str, tuple[HistoryEntry, ...]],
             overrides: Mapping[str, RouteOverride],
             changed: Mapping[str, RouteOverride | None]) -> Identities:
    """`identities` (copied) with `added` recorded: each route past MAX_IDENTITIES less its
    oldest recorded (the versions `serving` holds last), and all of them past
    MAX_IDENTITIES_ALL (`_bounded`, the pairs the state says serve, after `history` and
    the overrides `changed` makes, kept with `serving`)."""
    out = {r: dict(v) for r, v in identities.items()}
    for route, versions in added.items():
        known = out.setdefault(route, {})
        known.update(versions)
        if len(known) > MAX_IDENTITIES:  # (the oldest go, by the time recorded: a stored
            # document's keys come back sorted, not in the order they were seen; the
            # versions the recording file serves last)
            live = {v for r, v in serving if r == route}
            newest = sorted(known, key=lambda v: (v in live, str(known[v].get("time") or ""), v))
            out[route] = {v: known[v] for v in newest[-MAX_IDENTITIES:]}
    if added:
        out = _bounded(out, named, serving | _held(history, {**overrides, **changed}))
    return out


def _bounded(identities: dict[str, dict[str, dict[str, Any]]], named: frozenset[str],
             serving: frozenset[tuple[str, str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """`identities` past MAX_IDENTITIES_ALL less their oldest recorded: of routes `named`
    does not hold first, those `serving` holds last, a route left with none dropped."""
    over = sum(len(vs) for vs in identities.values()) - MAX_IDENTITIES_ALL
    if over <= 0:
        return identities
    order = sorted(((r, v) in serving, r in named, str(rec.get("time") or ""), r, v)
                   for r, vs in identities.items() for v, rec in vs.items())
    for _, _, _, r, v in order[:over]:
        del identities[r][v]
    return {r: vs for r, vs in identities.items() if vs}


def _held(history: Mapping[str, tuple[HistoryEntry, ...]],
          overrides: Mapping[str, RouteOverride | None]) -> frozenset[tuple[str, str]]:
    """The (route, version) pairs the state says serve: each route's last recorded stable
    and what an override latches. Kept past MAX_IDENTITIES_ALL with the recording file's
    own: during a deploy another instance's file serves routes this one does not name."""
    held = {(r, es[-1].stable) for r, es in history.items() if es}
    for r, ov in overrides.items():
        if ov is not None:
            held.update((r, v) for v, w in ov.weights.items() if w > 0)
            if ov.stable:
                held.add((r, ov.stable))
    return frozenset(held)
