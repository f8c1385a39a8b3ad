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

import re
from collections.abc import Mapping

__all__ = ["key_unconfirmed", "sibling_workers"]

#: a `serve --workers N` worker's fleet name (serving.instance_id): host, pid, the group's
#: tag, its slot
_WORKER = re.compile(r"(.+)-[0-9]+-([0-9a-f]{6})-w[0-9]+")


def sibling_workers(a: str, b: str) -> bool:
    """Whether instances `a` and `b` are workers of one `serve --workers` group (one host,
    one group tag): they share one config and key, so one's heartbeat confirms nothing of
    the other's key to the fleet."""
    ma, mb = _WORKER.fullmatch(a), _WORKER.fullmatch(b)
    return ma is not None and mb is not None and ma.groups() == mb.groups()


def key_unconfirmed(instance: str, heard: Mapping[str, float], refused_at: float | None,
                    now: float, window: float) -> str | None:
    """Why this instance's key is not confirmed by the fleet (None: it is, or nothing says
    otherwise): `heard`, instance → when its verified heartbeat last came (ours included);
    `refused_at`, when a heartbeat signed with a key id we do not hold last came; both on
    the clock of `now`, judged over `window` (the instance lease)."""
    if refused_at is None or now - refused_at > window:
        return None  # (no one speaks with another key: a lone instance, or one fleet)
    if any(name != instance and now - at <= window and not sibling_workers(name, instance)
           for name, at in heard.items()):
        return None  # (another instance signs with our key: not a worker of our group,
        # which shares our key whatever it is: a wrong-key pod's workers confirmed each other)
    return ("heartbeats of other instances are signed with a key this instance does not "
            "hold, and none it verifies came within the instance lease: its "
            "state.signing_key_env (or signing_key_file) may not be the fleet's (what it "
            "writes, the others refuse); compare store.verification.key_id with another "
            "instance's")
