"""The canonical bytes of a kill's or an unkill's audit event, written by pydantic-core.

Owns `kill_canonical`: an event of exactly the keys a kill or an unkill makes (its own,
its target's, its flags' as `KillFlag.public` gives them) whose every other value is a
string, an int, a bool or None is written by pydantic-core's JSON writer, its objects
rebuilt in sorted key order; anything else gets None and is written by
`audit.canonical`'s json encoder. Over those types the two writers give the same bytes
(compact separators, UTF-8 unescaped, the same escapes of `"`, `\\` and the control
characters, ints of any size: tests/test_committer_shortcuts.py compares them over every
code point), so every verifier, which hashes with the json encoder, recomputes the same
hash. The checks run in C (key sets compared, values fetched by itemgetter, their types
by map): in Python they cost what the writer saves. The two writers are compared once at
import (`_agrees`): a pydantic-core that writes otherwise turns the fast path off. Pure;
imports pydantic-core and the json module only.

Why: the json encoder with sort_keys took ~67k instructions for a kill's ~520-byte event
(callgrind), pydantic-core ~21k, and the committer seals the event before its commit leaves.
"""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any

from pydantic_core import to_json

__all__ = ["kill_canonical"]

#: the types both writers write alike (a float they do not: repr against ryu)
_PLAIN = frozenset({str, int, bool, type(None)})
#: the objects, their keys sorted: an event's (its values but target, before and after),
#: with its audit key's id and without; a target's; a kill flag's (KillFlag.public)
_TOP = ("action", "actor", "id", "prev_hash", "reason", "request_id", "source", "time",
        "trace_id")
_TOP_KEYED = tuple(sorted((*_TOP, "kid")))
_TARGET = ("route", "scope", "version")
_FLAG = ("abort_inflight", "actor", "generation", "reason", "route", "scope", "time",
         "version")
_NESTED = ("after", "before", "target")
_KEYS = frozenset((*_TOP, *_NESTED))
_KEYS_KEYED = _KEYS | {"kid"}
_TARGET_KEYS, _FLAG_KEYS = frozenset(_TARGET), frozenset(_FLAG)
_top, _top_keyed = itemgetter(*_TOP), itemgetter(*_TOP_KEYED)
_target, _flag = itemgetter(*_TARGET), itemgetter(*_FLAG)


def _target_of(d: Any) -> dict[str, Any] | None:
    """A target rebuilt in sorted key order when it has a target's keys, values plain."""
    if type(d) is not dict or d.keys() != _TARGET_KEYS:
        return None
    values = _target(d)
    if not _PLAIN.issuperset(map(type, values)):
        return None
    route, scope, version = values
    return {"route": route, "scope": scope, "version": version}


def _flag_of(d: Any) -> dict[str, Any] | None:
    """A kill flag (as KillFlag.public gives it) rebuilt in sorted key order, values plain."""
    if type(d) is not dict or d.keys() != _FLAG_KEYS:
        return None
    values = _flag(d)
    if not _PLAIN.issuperset(map(type, values)):
        return None
    abort, actor, gen, reason, route, scope, time, version = values
    return {"abort_inflight": abort, "actor": actor, "generation": gen, "reason": reason,
            "route": route, "scope": scope, "time": time, "version": version}


def _agrees() -> bool:
    """Whether the installed pydantic-core writes what the json encoder writes, over every
    character its escaping could treat apart (each control character, quote, backslash,
    DEL, the line separators, non-ASCII of every width) and ints past 64 bits: a version
    that escaped one differently would fork the hash chain between instances (every
    verifier hashes with the encoder). Checked once, at import; False: the encoder writes
    every event, as before the fast path."""
    text = "".join(map(chr, range(0x20))) + '"\\/\x7f\x80\xa0\xe9\u2028\u2029\ufeff\uffff\U0001f600'
    probe = {"a": text, "b": [2 ** 70, -(2 ** 64), 0, True, False, None], "c": {"k": text}}
    try:
        ours = to_json(probe)
    except ValueError:
        return False
    return ours == json.dumps(probe, separators=(",", ":"), ensure_ascii=False).encode()


_AGREE = _agrees()


def kill_canonical(ev: dict[str, Any]) -> bytes | None:
    """`ev`'s canonical JSON (`audit.canonical`'s bytes, `hash` and `mac` absent) when it
    has a kill's or an unkill's shape; None otherwise (the json encoder writes it then).
    (The objects are rebuilt as dict displays: dict(zip(...)) costs ~1k instructions a
    key, as much as the json encoder.)"""
    if not _AGREE:
        return None
    keys = ev.keys()
    keyed = keys == _KEYS_KEYED
    if not keyed and keys != _KEYS:
        return None
    values = (_top_keyed if keyed else _top)(ev)
    if not _PLAIN.issuperset(map(type, values)):
        return None
    target = _target_of(ev["target"])
    before, after = ev["before"], ev["after"]
    if target is None or (before is None and after is None):
        return None  # (a kill has an after, an unkill a before, an upgrade both)
    if before is not None and (before := _flag_of(before)) is None:
        return None
    if after is not None and (after := _flag_of(after)) is None:
        return None
    if keyed:
        action, actor, eid, kid, prev, reason, rid, source, time, trace = values
        out = {"action": action, "actor": actor, "after": after, "before": before, "id": eid,
               "kid": kid, "prev_hash": prev, "reason": reason, "request_id": rid,
               "source": source, "target": target, "time": time, "trace_id": trace}
    else:
        action, actor, eid, prev, reason, rid, source, time, trace = values
        out = {"action": action, "actor": actor, "after": after, "before": before, "id": eid,
               "prev_hash": prev, "reason": reason, "request_id": rid, "source": source,
               "target": target, "time": time, "trace_id": trace}
    try:
        return to_json(out)
    except ValueError:  # (a lone surrogate: the json encoder's error, as before)
        return None
