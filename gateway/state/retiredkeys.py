"""The key ids the fleet signed with before a rotation: what tells a value genuinely written
under a retired key (still in the store after step 3) from a forgery naming a key id nobody
here ever held.

Owns `<prefix>:keys`, a hash: a key id → the key ids retired from it, signed with that key
(kind `retired`, bound to the field), and `since:<id>` → when the fleet retired each. An
instance holding a previous key adds it under its current key's id when it connects, only
if the key order (`order:<id>:<id>`: keyorder.py) proves the previous key the older one;
the ids retired from the previous key (an earlier rotation's, and when) come along, so a
second rotation keeps the first one's left-overs apart from tampering. An instance's keys
alone cannot tell step 1 from step 2 (the same two keys, swapped), nor can the document's signer: at
step 1 after a step-2 instance re-signed the document, it is signed with the previous key
as at step 2 (that once recorded the new key as retired from the old one, read by an
instance on the old key alone after a rollback past step 1: every live value of the new
key counted as a left-over, `retired`, not tampering). So nothing is recorded without the
order (a store that lost it mid-rotation, a rotation begun on a version before this one:
the left-overs count as tampering after step 3, the alarm errs loud); a store flushed
between step 1 and a step-2 re-sign may get the order the wrong way round (its first
holder of both keys then signs with the new one: step 2 records nothing, and a late step-1
instance what it did before, in that corner only). Every instance reads the list under its
own key id then, and puts it in its keyring (`Keyring.retired`: a value naming one
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
from gateway.state.keyorder import (
    DONE,
    MAX_RECORD_BYTES,
    Report,
    mark_done,
    rotated_from_previous,
)
from gateway.state.signing import Keyring, Unverified, Which, cause_of
from gateway.state.store import MAX_DOC_BYTES

__all__ = ["AFTER_RETIREMENT", "MAX_RETIRED", "after_retirement", "fleet_signer", "load_retired"]

#: key ids kept per key (the newest): a value of a key retired that many rotations ago is gone
MAX_RETIRED = 8
#: seconds after the fleet last retired a key (its last step-2 instance started) that a
#: value the store stamped may still be a left-over: an instance at step 1 stopping then
AFTER_RETIREMENT = 300.0


def _opened(keys: Keyring, field: str, raw: bytes) -> list[str]:
    """The key ids of a stored list (raises Unverified, or ValueError when malformed)."""
    if len(raw) > MAX_RECORD_BYTES:
        raise Unverified(f"{len(raw)} bytes, over the {MAX_RECORD_BYTES}-byte limit (not read)")
    body, _ = keys.open(f"retired:{field}".encode(), raw)
    got = json.loads(body)
    if not isinstance(got, list) or not all(isinstance(k, str) and len(k) <= 64 for k in got):
        raise Unverified("the retired key ids are not a list of key ids")
    return got[-MAX_RETIRED:]


async def fleet_signer(call: Callable[..., Awaitable[Any]], state: str,
                      keys: Keyring) -> Which | None:
    """Which of our keys the fleet's stored document (key `state`) verifies under
    ("current" or "previous"); None without a previous key, without a document, and for
    one that does not verify (the sync loop reports it)."""
    if keys.previous is None:
        return None
    try:
        size = await call("STRLEN", state)
        raw = await call("GET", state) if 0 < int(size) <= MAX_DOC_BYTES else None
    except StateError:
        return None  # (a key of another type: the load reports it)
    if raw is None:
        return None
    try:
        return keys.open(b"state", raw)[1]
    except (ValueError, RecursionError):
        return None


async def load_retired(call: Callable[..., Awaitable[Any]], key: str, keys: Keyring,
                       report: Report, signer: Which | None = None,
                       started: bool = True) -> bool:
    """Record our previous key's id as retired from our current key when the key order
    proves it the older one (`rotated_from_previous`; `signer`: `fleet_signer`), and put
    the ids retired from our current key in `keys.retired`. `call`: a redis command;
    `report`: on_unverified, for a stored list that does not verify. `started`: the
    process's first load (a reconnect is no start: only a start moves the retirement time
    on; moved at each reconnect, whoever can kill client connections kept it new, with an
    instance left at step 2, and values of the retired key written at any time counted
    only as `retired`: review revmerge37). True when the key order proves us at step 2 (the
    caller re-signs a document still signed with the previous key: reseed.py)."""
    if keys.current is None:
        return False
    me = keys.current.kid
    raw = await call("HGET", key, me)
    known: list[str] = []
    if raw is not None:
        try:
            known = _opened(keys, me, raw)
        except (ValueError, RecursionError) as exc:
            report("state", f"the retired key ids ({key}): {exc}", None, cause_of(exc))
    since = await _since(call, key, keys, me, report)
    prev = keys.previous
    if prev is None and known:
        await mark_done(call, key, keys, known, since)
    step2 = prev is not None and await rotated_from_previous(
        call, key, keys, signer, report, known, since)
    if step2:
        assert prev is not None
        # the ids retired from the previous key come along (an earlier rotation's: kept
        # under its id alone, they were lost at the next one, and that key's left-overs
        # counted as tampering after a routine second rotation, review impleft8)
        before, before_since = await _retired_from(call, key, keys, prev.kid, report)
        carried = [k for k in before if k not in known and k not in (me, prev.kid)]
        merged = [*carried, *[k for k in known if k != prev.kid], prev.kid][-MAX_RETIRED:]
        if merged != known:
            known = merged
            await call("HSET", key, me, keys.seal(f"retired:{me}".encode(),
                                                  json.dumps(known).encode()))
        # (each step-2 instance that starts moves it on: until the last one started, an
        # instance at step 1 may still have been writing with the old key; a reconnect
        # does not, review revmerge37)
        moved = {**{k: v for k, v in before_since.items() if k in carried}, **since}
        # (the rotation from our previous key is not done: its mark goes, others stay)
        moved = {k: v for k, v in moved.items() if k in known or (
            k.startswith(DONE) and k[len(DONE):] in known and k[len(DONE):] != prev.kid)}
        if started or prev.kid not in moved:
            secs, _ = await call("TIME")
            moved[prev.kid] = max(float(secs), moved.get(prev.kid, 0.0))
        if moved != since:
            since = moved
            await call("HSET", key, f"since:{me}", keys.seal(
                f"retiredsince:{me}".encode(), json.dumps(since).encode()))
    ours = keys.keys()
    keys.retired.clear()
    keys.retired.update(k for k in known if k not in ours)
    keys.retired_since.clear()
    keys.retired_since.update((k, t) for k, t in since.items() if k in keys.retired)
    return step2


async def _retired_from(call: Callable[..., Awaitable[Any]], key: str, keys: Keyring,
                        kid: str, report: Report) -> tuple[list[str], dict[str, float]]:
    """The key ids retired from our previous key `kid` and when (its holders' records,
    verified with it: a previous rotation's), to carry under our current key's id."""
    raw = await call("HGET", key, kid)
    if raw is None:
        return [], {}
    try:
        ids = _opened(keys, kid, raw)
    except (ValueError, RecursionError) as exc:
        report("state", f"the retired key ids ({key} {kid}): {exc}", None, cause_of(exc))
        return [], {}
    return ids, await _since(call, key, keys, kid, report)


async def _since(call: Callable[..., Awaitable[Any]], key: str, keys: Keyring, kid: str,
                 report: Report) -> dict[str, float]:
    """When the fleet last retired each key id retired from the key `kid` (ours: current,
    or previous) (the store's clock), as a holder of it recorded (`since:<id>`); {} without
    a record."""
    field = f"since:{kid}"
    raw = await call("HGET", key, field)
    if raw is None:
        return {}
    try:
        if len(raw) > MAX_RECORD_BYTES:
            raise Unverified(f"{len(raw)} bytes, over the {MAX_RECORD_BYTES}-byte limit (not read)")
        got = json.loads(keys.open(f"retiredsince:{kid}".encode(), raw)[0])
        if not isinstance(got, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) for k, v in got.items()):
            raise Unverified("the retirement times are not a map of key ids to times")
    except (ValueError, RecursionError) as exc:
        report("state", f"the retirement times ({key} {field}): {exc}", None, cause_of(exc))
        return {}
    return {k: float(v) for k, v in list(got.items())[:MAX_RETIRED * 2]}


def after_retirement(keys: Keyring, record: bytes, stamp: float) -> str | None:
    """Why a stored value sealed as `record` (its key id first) and stamped `stamp` by the
    store (unix seconds) is no left-over of a rotation, or None: it names a retired key id
    and was written more than AFTER_RETIREMENT after the fleet retired that key. An
    instance still signing with it (a pod rolled back to the old Secret), a replay or a
    forgery: tampering (`unknown_key_id`), not the `retired` warning. A forger who dates
    the value before the retirement is still counted as `retired` (the stamp is not signed
    with any key we hold); a key retired before this version recorded when is judged as
    before."""
    kid = record.split(b" ", 1)[0].decode("ascii", "replace")
    since = keys.retired_since.get(kid) if kid in keys.retired else None
    if since is None or stamp <= since + AFTER_RETIREMENT:
        return None
    return (f"signed with the key id {kid!r}, retired in a key rotation, but written "
            f"{stamp - since:.0f} s after the fleet retired it (an instance still signing "
            "with the old key, a replay, or a forgery): not a left-over of the rotation")
