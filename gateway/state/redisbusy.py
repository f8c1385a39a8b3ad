"""Redis's -LOADING, -BUSY and -NOREPLICAS replies as StoreBusy, with words that say where
to look.

Owns the translation of those error replies (a command refused before it ran: nothing
was changed; -NOREPLICAS, StoreRefusesWrites: a write refused by redis's own
min-replicas-to-write, while reads work) wherever a redis call is made (redislink.py's
calls and connects, redis.py's subscription). Any other error reply is left to its
caller. Imports only the errors.
"""

from __future__ import annotations

from gateway.errors import StoreBusy, StoreRefusesWrites

__all__ = ["BUSY_RETRY_S", "LOADING_RETRY_S", "REFUSED_RETRY_S", "busy", "refuses_writes"]

#: Retry-After (s) when redis loads its dataset (seconds for most; INFO says how long)
LOADING_RETRY_S = 2
#: Retry-After (s) when a script runs past its time limit (it ends only when stopped)
BUSY_RETRY_S = 5
#: Retry-After (s) when redis refuses writes (-NOREPLICAS: until a replica is back)
REFUSED_RETRY_S = 5


def refuses_writes(error: str, where: str) -> StoreRefusesWrites | None:
    """StoreRefusesWrites for a -NOREPLICAS reply (a script's too: redis 7 keeps the code
    first, redis 6 after "-"), None for any other."""
    if not (error.startswith("NOREPLICAS") or "-NOREPLICAS" in error):
        return None
    return StoreRefusesWrites(
        "store_refuses_writes",
        f"redis at {where} refuses every write: its min-replicas-to-write (redis's own "
        f"setting, beside state.min_replicas) needs more good replicas than it has "
        f"(redis said: {error[:80]}), so nothing was changed. Bring a replica back (`INFO "
        f"replication` there: min_slaves_good_slaves) or lower min-replicas-to-write; "
        f"meanwhile a kill can be taken on one instance with ?local=1 (`killgate kill "
        f"--local`, README \"Emergency local kill\"), merged into the store once it takes "
        f"writes", REFUSED_RETRY_S)


def busy(error: str, where: str) -> StoreBusy | None:
    """StoreBusy for an error reply (its text, as redis sent it) that is -LOADING or -BUSY
    (by its first word: BUSYGROUP, BUSYKEY are other errors), None for any other. `where`:
    the redis it came from (an endpoint's description). -NOREPLICAS: refuses_writes."""
    refused = refuses_writes(error, where)
    if refused is not None:
        return refused
    word = error.split(" ", 1)[0]
    said = error[:120]
    if word == "LOADING":
        return StoreBusy(
            "state_store_loading",
            f"redis at {where} is loading its dataset into memory (it has just started or "
            f"restarted, or is a replica in a full sync): nothing was changed; retry in a "
            f"moment (redis said: {said}; `INFO persistence` there shows loading_eta_seconds)",
            LOADING_RETRY_S)
    if word == "BUSY":
        return StoreBusy(
            "state_store_busy",
            f"a Lua script on redis at {where} is running past its time limit "
            f"(busy-reply-threshold, lua-time-limit), and redis runs no other command until "
            f"it ends: nothing was changed. Stop it with `redis-cli SCRIPT KILL` (`FUNCTION "
            f"KILL` for a function; one that has written only ends with SHUTDOWN NOSAVE) "
            f"(redis said: {said})", BUSY_RETRY_S)
    return None
