"""The store's words on `killgate status`'s first line: whether it is reached, and whether
a write can be confirmed there (state.min_replicas: the primary's replicas in sync).

Pure functions of the /v1/status document's `store`; cli/admin.py prints them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["replicas_line", "store_reach"]


def store_reach(store: dict[str, Any]) -> str:
    """"reachable", or why not, WRITES REFUSED while redis refuses every write (its own
    min-replicas-to-write: found by revdurable, said UNREACHABLE before), and NOT DURABLE
    while the primary holds fewer replicas in sync than min_replicas (every kill, rollback
    and drill answered 503 not_durable: found by review in a real Sentinel failover, where
    status said "reachable" only)."""
    connected = store.get("connected")
    reach = ("reachable" if connected is True
             # (it answers, with a document a newer version wrote: an upgrade under way)
             else "HOLDS A NEWER VERSION'S STATE (finish the upgrade, or see README "
                  "Upgrading to roll back)" if store.get("newer_version")
             # (it answers, with a document this instance cannot verify: its key?)
             else "UNVERIFIABLE (check state.signing_key_env)" if store.get("answering")
             # (its reads verify, its subscription is refused or cut: not unreachable)
             else f"reachable, PUSHES CUT: reading the store every "
                  f"{store.get('poll_interval_ms')} ms" if store.get("pushes") == "cut"
             else "UNREACHABLE" if connected is False else "reach unknown")
    refused = store.get("writes_refused")
    if connected is True and isinstance(refused, str) and refused:
        # (redis's own min-replicas-to-write: -NOREPLICAS; reads work, every write refused)
        reach += (", WRITES REFUSED: redis's min-replicas-to-write refuses every write: "
                  "kills cannot be made through the store; use killgate kill --local on each "
                  "instance (README \"Emergency local kill\"); bring a replica back "
                  f"({_said(refused)})")
    got = store.get("replicas")
    if isinstance(got, dict) and isinstance(got.get("connected"), int) \
            and isinstance(got.get("required"), int) and got["connected"] < got["required"]:
        reach += (f", NOT DURABLE: the primary has {got['connected']} of {got['required']} "
                  "replicas (min_replicas): kills are in force but answered 503 not_durable; "
                  "bring a replica back")
    return reach


def _said(refused: str) -> str:
    """What redis said, out of a refusal's words (all of them, cut, if not found)."""
    said = refused.partition("redis said: ")[2].partition(")")[0]
    return f"redis said: {said[:80]}" if said else refused[:120]


def replicas_line(store: dict[str, Any]) -> str | None:
    """A line when min_replicas is set and the replicas are not known while the store is
    reached (a redis user that may run neither INFO nor ROLE, ...): whether a kill would
    be confirmed is then learnt only from its answer."""
    why = store.get("replicas_unknown")
    if not why or store.get("connected") is not True:
        return None
    return (f"STORE REPLICAS UNKNOWN (state.min_replicas): {why}; a write says it is not "
            "durable only in its answer (503 not_durable)")
