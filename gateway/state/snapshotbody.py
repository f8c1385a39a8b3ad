"""What a snapshot file's body says besides the document (snapshot.py): where its state
came from (`unverified_origin`), the deployment it belongs to (`prefix`), and what an
untrusted file may tell (its kills). Pure.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from gateway.domain.statedoc import KillFlag, NewerDocument, RouteOverride, StateDoc

__all__ = ["SNAPSHOT_KEYS", "Foreign", "Origin", "decode_body", "kills_only", "named_prefix",
           "newer_kills", "newer_rollbacks", "read_origin", "stays"]

#: what a snapshot's body holds besides the document's own fields
SNAPSHOT_KEYS = frozenset({"prefix", "unverified_origin"})


#: where the state a snapshot holds came from, when not from the fleet: `{"why": str,
#: "epochs": [str]}` (the cause, and the epochs this instance created), or None
Origin = dict[str, Any] | None


def read_origin(body: bytes) -> tuple[str | None, tuple[str, ...]]:
    """The `unverified_origin` of a verified snapshot's body: (why, epochs); (None, ())
    when it has none. One that is not of the shape written still counts as one: the state
    is not taken for the fleet's on a doubt."""
    got = json.loads(body).get("unverified_origin")
    if got is None:
        return None, ()
    why, epochs = (got.get("why"), got.get("epochs")) if isinstance(got, dict) else (None, None)
    if not isinstance(epochs, list) or not all(isinstance(e, str) for e in epochs):
        epochs = []
    return (why if isinstance(why, str) and why else "unverified_origin not readable"), \
        tuple(epochs)


def stays(there: tuple[int, int, bool], new: tuple[int, int], origin: Origin) -> bool:
    """Whether the file's document (generation, audit_seq, marked of unverified origin)
    stays rather than be replaced by `new` (written with `origin`): it is newer (a sibling
    worker's), or as new and unmarked while `new` is marked (a marked write of the same
    document landing after the unmarked one put the mark back on state the fleet had
    vouched for: a restart then refused to write it over the fleet's document)."""
    return there[:2] > new or (there[:2] == new and origin is not None and not there[2])


class Foreign(ValueError):
    """A snapshot of another deployment (another `state.prefix`): refused whole."""

    def __init__(self, prefix: str, ours: str) -> None:
        super().__init__(f"it is another deployment's snapshot (state.prefix {prefix!r}, not "
                         f"this one's {ours!r}): a copied file, or two deployments sharing "
                         "one snapshot_path")
        self.prefix = prefix


def kills_only(doc: StateDoc,
               rollbacks: dict[str, RouteOverride] | None = None) -> StateDoc:
    """What an untrusted file may tell us: its kills (they only stop traffic), at generation
    1 — past an instance's empty start, so they are adopted, and never its own generation
    (whoever wrote the file chose it: one the fleet could never move past). `rollbacks`:
    a verified newer version's file's latched rollbacks (`newer_rollbacks`), never an
    untrusted file's overrides."""
    return StateDoc(generation=1, kills=doc.kills, overrides=rollbacks or {})


def decode_body(body: bytes, untrusted: bool = False) -> StateDoc:
    """The document a snapshot's body holds (without SNAPSHOT_KEYS: a field the document
    does not know is a newer version's, statedoc.NewerDocument); ValueError when it is
    not one. `untrusted`: a file whose kills alone are taken (kills_only), its other
    top-level keys whatever they are (an edited file)."""
    try:
        got = json.loads(body)
    except RecursionError:
        raise ValueError("not a valid state document: nested too deeply") from None
    if isinstance(got, dict):
        if untrusted:
            got = {k: v for k, v in got.items() if k in _DOC_KEYS}
        elif not SNAPSHOT_KEYS.isdisjoint(got):
            got = {k: v for k, v in got.items() if k not in SNAPSHOT_KEYS}
    try:
        return StateDoc.from_json(got)
    except NewerDocument:
        if not untrusted:
            raise
        return newer_kills(body)[0]  # (its kills alone are taken: those this version reads)


_DOC_KEYS = frozenset(StateDoc().to_json())
_FLAG_KEYS = frozenset(f.name for f in fields(KillFlag))


def newer_kills(body: bytes) -> tuple[StateDoc, tuple[str, ...]]:
    """The kills this version can enforce of a verified document a newer version wrote
    (statedoc.NewerDocument): each flag without the fields it does not know (a newer field
    can only qualify a kill: enforced without it, it stops more traffic, never less), and
    the keys of the flags it cannot read even so (a new kind of kill: enforced nowhere here,
    so named). Refused whole, such a snapshot left a rolled-back instance holding no kill."""
    got = json.loads(body)
    flags = got.get("kills") if isinstance(got, dict) else None
    kept: dict[str, KillFlag] = {}
    unread: list[str] = []
    for key, flag in (flags.items() if isinstance(flags, dict) else ()):
        known = {k: v for k, v in flag.items() if k in _FLAG_KEYS} if isinstance(
            flag, dict) else flag
        try:
            kept.update(StateDoc.from_json({"kills": {key: known}}).kills)
        except ValueError:
            unread.append(str(key)[:128])
    return StateDoc(kills=kept), tuple(unread)


#: the kinds of override that latch a route's stable with all its traffic (overrides.py's
#: with_stable): taken off the versions the route was rolled off, onto a known-good one
_ROLLBACKS = frozenset({"rollback", "auto_rollback"})


def newer_rollbacks(body: bytes) -> dict[str, RouteOverride]:
    """The latched rollbacks of a verified document a newer version wrote (see
    `newer_kills`): each route's override that this version reads whole (no field it does
    not know: one could qualify where the traffic goes) and that is a rollback giving all
    of the route's traffic to its stable and none to any other version. Dropped with the
    rest of such a snapshot, a rollback past that version put the route back on its file's
    weights: the canary an incident had rolled off served again. Nothing else is kept: a
    `weights` or `promote` override may send traffic to a version the file does not (its
    stable a promoted one), which this version cannot judge without the newer's state."""
    got = json.loads(body)
    overrides = got.get("overrides") if isinstance(got, dict) else None
    kept: dict[str, RouteOverride] = {}
    for route, ov in (overrides.items() if isinstance(overrides, dict) else ()):
        try:
            read = StateDoc.from_json({"overrides": {route: ov}}).overrides
        except ValueError:
            continue  # (a field it does not know, or not an override: not understood)
        one = read.get(route)
        if one is not None and one.kind in _ROLLBACKS and one.stable and all(
                (w > 0) == (name == one.stable) for name, w in one.weights.items()) \
                and one.weights.get(one.stable, 0) > 0:
            kept[route] = one
    return kept


def named_prefix(body: bytes) -> str | None:
    """The deployment (redis prefix) a snapshot's body names; None: none (a file written
    before it was named, or no document: decode_doc says why)."""
    try:
        named = json.loads(body).get("prefix")
    except (ValueError, AttributeError, RecursionError):
        return None
    return named if isinstance(named, str) else None
