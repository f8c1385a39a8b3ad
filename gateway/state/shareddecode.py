"""A pushed state document decoded sharing what it has in common with the one before.

Owns `SharedDecoder`. Every instance decodes each document a kill pushes, whole: at 500
routes of 5 history entries (415 KB) that was ~34M instructions, and the swap then compared
every route's history entry by entry with the document held (~5M more: the two shared no
object), when a kill changes none of it. Here the bytes are parsed to plain JSON values
(pydantic's reader, in Rust), each part's value, and each key's value in a part that is a mapping (a route's
history, overrides, rollout; a kill flag), is compared with the one the last document had
as parsed, and only what differs is validated; what is equal is the last document's own
object. The swap's `_changed_routes` then passes a shared route by identity (callgrind,
benchmarks/kill_instructions.py --routes 500: decode 33.6M -> 23.1M, the receiver's swap
7.7M -> 1.9M, the committer's 2.2M).

Exact: equal JSON values validate to equal values (pydantic's lax mode reads 1, 1.0 and
true alike for a number or flag; a string equals only a string; NaN equals nothing; the
parts that keep values as written, `_FREE`, are validated whole), and
a part's validation depends on that part alone, so the document equals `decode_doc`'s
(tests/test_shared_decode.py checks it on random sequences, dicts reordered, numbers
respelt). What the fast path does not read (not JSON, not an object, a value refused, a
part a newer version wrote) is decoded by `decode_doc`, which says why. A document under
`SMALL` bytes is decoded whole: there the comparisons would cost more than they spare.
"""

from __future__ import annotations

from dataclasses import fields
from itertools import compress
from operator import ne
from typing import Any

from pydantic_core import from_json

from gateway.domain.statedoc import StateDoc
from gateway.state.store import decode_doc

__all__ = ["SMALL", "SharedDecoder"]

#: documents under this many bytes are decoded whole (a 1.4 KB one in ~98k instructions)
SMALL = 16 * 1024

#: the parts that are mappings (route, kill key, id -> value): shared key by key
_KEYED = frozenset(f.name for f in fields(StateDoc) if str(f.type).startswith("dict["))
_NAMES = frozenset(f.name for f in fields(StateDoc))
#: the parts that keep values as written (`Any`: an approval, a drill's result, an identity,
#: an open drill's `before`; the keys a newer writer added to a rollout): validated whole,
#: never shared. Equal by == is not the same JSON there (1, 1.0 and true): shared, the last
#: document's spelling was kept, not these bytes' (not decode_doc's document; signed so by
#: the next write, read as the other type by a record's own checks)
_FREE = frozenset(f.name for f in fields(StateDoc) if "Any" in str(f.type)) | {"drills",
                                                                                "progress"}


class SharedDecoder:
    """Decodes state documents, sharing each unchanged value with the last one decoded.
    Not thread-safe: one per store connection, used on its loop."""

    __slots__ = ("_doc", "_raw")

    def __init__(self) -> None:
        self._raw: dict[str, Any] | None = None  # the last document, as parsed
        self._doc: StateDoc | None = None  # ... and as validated from it

    def decode(self, body: bytes) -> StateDoc:
        """The document in `body` (verified JSON bytes); ValueError when it is not one."""
        prev_raw, prev = self._raw, self._doc
        self._raw = self._doc = None
        if len(body) < SMALL:
            return decode_doc(body)
        try:
            # pydantic's reader, decode_doc's; its string cache (every string, across calls)
            # gives the strings the last document had the same objects: compared by identity
            raw = from_json(body, cache_strings="all")
        except (ValueError, RecursionError):
            return decode_doc(body)  # (says why, or reads what only json.loads does)
        if type(raw) is not dict:
            return decode_doc(body)
        try:
            if prev_raw is None or prev is None:
                doc = StateDoc.from_json(raw)
            else:
                doc = _shared(raw, prev_raw, prev)
        except (ValueError, RecursionError):
            return decode_doc(body)
        self._raw, self._doc = raw, doc
        return doc


def _shared(raw: dict[str, Any], prev_raw: dict[str, Any], prev: StateDoc) -> StateDoc:
    """`raw` validated, with every value equal to `prev_raw`'s taken from `prev` (which was
    validated from `prev_raw`). Raises ValueError as StateDoc.from_json does."""
    partial: dict[str, Any] = {}  # what is validated: the values that differ
    kept: dict[str, Any] = {}  # field -> prev's value, whole
    keyed: dict[str, dict[str, Any]] = {}  # field -> its raw mapping, shared key by key
    for name, val in raw.items():
        if name not in _NAMES:  # (a newer writer's part: decode_doc refuses it as such,
            raise ValueError(name)  # NewerDocument, saying which)
        old = prev_raw.get(name, _MISSING)
        if name in _FREE:
            partial[name] = val
        elif name in _KEYED and type(val) is dict and type(old) is dict:
            # key by key, in C: each pair compared once, keys `old` lacks added
            changed = dict.fromkeys(compress(val, map(ne, val.values(), map(old.get, val))))
            if len(val) != len(old) or val.keys() != old.keys():
                changed.update(dict.fromkeys(val.keys() - old.keys()))
            if not changed and list(val) == list(old):
                kept[name] = getattr(prev, name)  # (the same object: the swap skips it)
            else:
                partial[name] = {k: val[k] for k in changed}
                keyed[name] = val
        elif type(val) is type(old) and val == old:
            kept[name] = getattr(prev, name)
        else:
            partial[name] = val
    new = StateDoc.from_json(partial)
    for name, val in keyed.items():
        got, had = getattr(new, name), getattr(prev, name)
        kept[name] = {k: got[k] if k in got else had[k] for k in val}
    return new.with_changes(**kept)


_MISSING = object()
