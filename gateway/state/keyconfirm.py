"""Whether another instance's heartbeat confirms this instance's signing key (impwrongkey).

An instance with a key that is not the fleet's, and nothing to tell it so (no snapshot, a
flushed store it seeds first: nothing it cannot verify in the store yet), looks healthy
while every other instance refuses what it writes. What it does hear: the other
instances' heartbeats on the acks channel, each refused with its key (another key id).
`key_unconfirmed` says so while that lasts: refused heartbeats heard within the lease and
none of another instance that verifies. Shown in /v1/status (`store.key_unconfirmed`) and
by `killgate status`, never in readiness: with two instances on two keys each is
"unconfirmed", and one misconfigured pod must not take the fleet out of its load balancer;
a forger can also publish refused acks. Pure: the caller hands in the times.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["key_unconfirmed"]


def key_unconfirmed(instance: str, heard: Mapping[str, float], refused_at: float | None,
                    now: float, window: float) -> str | None:
    """Why this instance's key is not confirmed by the fleet (None: it is, or nothing says
    otherwise): `heard`, instance → when its verified heartbeat last came (ours included);
    `refused_at`, when a heartbeat signed with a key id we do not hold last came; both on
    the clock of `now`, judged over `window` (the instance lease)."""
    if refused_at is None or now - refused_at > window:
        return None  # (no one speaks with another key: a lone instance, or one fleet)
    if any(name != instance and now - at <= window for name, at in heard.items()):
        return None  # (another instance signs with our key)
    return ("heartbeats of other instances are signed with a key this instance does not "
            "hold, and none it verifies came within the instance lease: its "
            "state.signing_key_env (or signing_key_file) may not be the fleet's (what it "
            "writes, the others refuse); compare store.verification.key_id with another "
            "instance's")
