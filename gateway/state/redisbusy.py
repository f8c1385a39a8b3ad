"""Redis's -LOADING and -BUSY replies as StoreBusy, with words that say where to look.

Owns the translation of those two error replies (a command refused before it ran: nothing
was changed) wherever a redis call is made (redislink.py's calls and connects, redis.py's
subscription). Any other error reply is left to its caller. Imports only the errors.
"""

from __future__ import annotations

from gateway.errors import StoreBusy

__all__ = ["BUSY_RETRY_S", "LOADING_RETRY_S", "busy"]

#: Retry-After (s) when redis loads its dataset (seconds for most; INFO says how long)
LOADING_RETRY_S = 2
#: Retry-After (s) when a script runs past its time limit (it ends only when stopped)
BUSY_RETRY_S = 5


def busy(error: str, where: str) -> StoreBusy | None:
    """StoreBusy for an error reply (its text, as redis sent it) that is -LOADING or -BUSY
    (by its first word: BUSYGROUP, BUSYKEY are other errors), None for any other. `where`:
    the redis it came from (an endpoint's description)."""
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
