"""The key ids the fleet signed with before a rotation: what tells a value genuinely written
under a retired key (still in the store after step 3) from a forgery naming a key id nobody
here ever held.

Owns `<prefix>:keys`, a hash: a key id → the key ids retired from it, signed with that key
(kind `retired`, bound to the field). An instance holding a previous key adds it under its
current key's id when it connects, if the fleet's stored document is signed with that
previous key (`signed_with_previous`): rotation step 2, the old key retired. Never at step 1, where the
previous key is the new one nobody signs with yet (recorded as retired from the old key,
an instance still on the old key alone took every value of the new key, live documents
too, for a left-over of a key "the fleet retired"; one at step 1 connecting once a step-2
instance re-signed the document still does: read only by an instance on the old key
alone, a rollback past step 1). Every instance reads the list
under its own key id then, and puts it in its keyring (`Keyring.retired`: a value naming one
is refused as ever, cause `retired`, counted apart from tampering: tamper.py). Only a holder
of the key the fleet signs with can name a retired key id there: a forger's list is refused
(counted), and one deleted or flushed makes such values count as tampering again (the
alarm errs loud). A misconfigured instance's list, under its own key id, is never read by
the fleet. Best effort: a store that cannot answer changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import StateError
from gateway.state.signing import Keyring, Unverified, cause_of
from gateway.state.store import MAX_DOC_BYTES

__all__ = ["MAX_RETIRED", "load_retired", "signed_with_previous"]

#: key ids kept per key (the newest): a value of a key retired that many rotations ago is gone
MAX_RETIRED = 8
_MAX_BYTES = 4096

Report = Callable[..., None]


def _opened(keys: Keyring, field: str, raw: bytes) -> list[str]:
    """The key ids of a stored list (raises Unverified, or ValueError when malformed)."""
    if len(raw) > _MAX_BYTES:
        raise Unverified(f"{len(raw)} bytes, over the {_MAX_BYTES}-byte limit (not read)")
    body, _ = keys.open(f"retired:{field}".encode(), raw)
    got = json.loads(body)
    if not isinstance(got, list) or not all(isinstance(k, str) and len(k) <= 64 for k in got):
        raise Unverified("the retired key ids are not a list of key ids")
    return got[-MAX_RETIRED:]


async def signed_with_previous(call: Callable[..., Awaitable[Any]], state: str,
                               keys: Keyring) -> bool:
    """Whether the fleet's stored document (key `state`) verifies under our previous key:
    the one the fleet signed with before our current key (step 2 of a rotation). False at
    step 1 (signed with our current key, the old one), without a document, and for one
    that does not verify (the sync loop reports it)."""
    if keys.previous is None:
        return False
    try:
        size = await call("STRLEN", state)
        raw = await call("GET", state) if 0 < int(size) <= MAX_DOC_BYTES else None
    except StateError:
        return False  # (a key of another type: the load reports it)
    if raw is None:
        return False
    try:
        return keys.open(b"state", raw)[1] == "previous"
    except (ValueError, RecursionError):
        return False


async def load_retired(call: Callable[..., Awaitable[Any]], key: str, keys: Keyring,
                       report: Report, retiring: bool = False) -> None:
    """Record our previous key's id as retired from our current key when `retiring` (the
    fleet's document is signed with it: `signed_with_previous`), and put the ids retired
    from our current key in `keys.retired`. `call`: a redis command; `report`:
    on_unverified, for a stored list that does not verify."""
    if keys.current is None:
        return
    me = keys.current.kid
    raw = await call("HGET", key, me)
    known: list[str] = []
    if raw is not None:
        try:
            known = _opened(keys, me, raw)
        except (ValueError, RecursionError) as exc:
            report("state", f"the retired key ids ({key}): {exc}", None, cause_of(exc))
    prev = keys.previous
    if retiring and prev is not None and prev.kid not in known:
        known = [*known, prev.kid][-MAX_RETIRED:]
        await call("HSET", key, me, keys.seal(f"retired:{me}".encode(),
                                              json.dumps(known).encode()))
    ours = keys.keys()
    keys.retired.clear()
    keys.retired.update(k for k in known if k not in ours)
