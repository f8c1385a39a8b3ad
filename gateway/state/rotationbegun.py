"""Whether the fleet's document is signed with the key a rotation from ours was begun to
(review revrot4): an instance holding one key alone, facing a document signed with a key id
it does not hold, was told to check that its key was the fleet's, while the store showed a
rotation from its key to that one begun (step 1's key order, signed with its key) and not
finished: either this instance skipped step 2, or the rotation was rolled back after its
step 2 (the step-1 instances do not sign a document back: retiredkeys.py), and a write
through an instance holding both keys, signing with this one, is the way out.

Best effort, read once as the instance connects; nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import StateError
from gateway.state.signing import MAGIC, Keyring

__all__ = ["ROLLED_BACK", "begun_to"]

#: what to do (`{kid}`: the key id the fleet's document is signed with)
ROLLED_BACK = (
    "the fleet's document is signed with key id {kid!r}, the key a rotation from this "
    "instance's key was begun to (its key order, written at step 1, is in the store and "
    "not marked done): if the rotation goes on, this instance skipped step 2 (give it that "
    "key as state.signing_key_env and its own as previous_signing_key_env, and restart "
    "it); if it was rolled back after step 2, make a write (a kill or an unkill) through "
    "an instance holding this key with that one as previous_signing_key_env (it signs the "
    "state with this key), or keep previous_signing_key_env on every instance until one is "
    "made (README Key rotation)")


async def begun_to(call: Callable[..., Awaitable[Any]], state: str, keys_key: str,
                   keys: Keyring) -> str | None:
    """The key id the stored document (key `state`) is signed with, when it is none of
    ours and our key order with it (`<keys_key>` `order:<id>:<id>`, verified with our key)
    says a rotation from our key to it was begun and not marked done; else None."""
    if keys.current is None or keys.previous is not None:
        return None
    try:
        raw = await call("GETRANGE", state, 0, 127)  # (its key id: the document unread)
        if not isinstance(raw, bytes) or not raw.startswith(MAGIC):
            return None
        kid = raw[len(MAGIC):].split(b" ", 1)[0][:64].decode("ascii")
        if keys.holds(kid):
            return None
        me = keys.current.kid
        field = "order:" + ":".join(sorted((me, kid)))
        order = await call("HGET", keys_key, field)
        if order is None or len(order) > 4096:
            return None
        got = json.loads(keys.open(f"keyorder:{field}".encode(), order)[0])
    except (StateError, ValueError, RecursionError):
        return None
    begun = isinstance(got, dict) and got.get("from") == me and got.get("to") == kid
    return kid if begun and not got.get("done") else None
