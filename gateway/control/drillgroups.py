"""Which instances that published one admin address a drill may take for one `serve
--workers N` group after its restore (control/drillbehind.py asks such an address until
each has answered as itself, and takes one never heard there for gone): none that published
different data addresses, and none whose names are no one group's. Pure: the addresses and
names come from the heartbeats the drill started with.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from gateway.state.keyconfirm import sibling_workers

__all__ = ["apart"]


def apart(started: Collection[str], admin_of: Mapping[str, str],
          data_of: Mapping[str, str]) -> dict[str, str]:
    """The admin addresses several instances of `started` published that are no one
    `serve --workers` group's, each with why (one not heard there is `unasked`, never
    taken for gone): a group's workers share their data address, and their names (host
    and group tag: state/keyconfirm.sibling_workers). Instances of two hosts each listening
    on loopback publish one admin address, and one data address too when both listen on
    127.0.0.1:8080 (behind a sidecar): taken for one group, the drill reached its own
    host's instance, took the other one for gone, and passed while it enforced the kill."""
    at = dict[str, list[str]]()
    for n in sorted(started):
        if admin_of.get(n):
            at.setdefault(admin_of[n], []).append(n)
    out = {}
    for admin, names in at.items():
        urls = {data_of[n] for n in names if data_of.get(n)}
        groups: list[str] = []  # (the first name of each group)
        for n in names:
            if not any(sibling_workers(first, n) for first in groups):
                groups.append(n)
        fix = ("set drills.advertise_host (or KILLGATE_ADVERTISE_HOST) and listen addresses "
               "the drill can reach")
        if len(urls) > 1:
            out[admin] = (f"instances with {len(urls)} different data addresses published "
                          "this one admin address, so it is no --workers group's and reaches "
                          "one host at most (an admin listener on loopback on each host?): "
                          + fix)
        elif len(groups) > 1:
            out[admin] = (f"{len(groups)} instances that are no one --workers group's (their "
                          "names differ in host or group tag) published this one admin "
                          "address" + (f" and one data address, {min(urls)}" if urls else "")
                          + ", which reaches one of them at most (listeners on loopback on "
                          "each host? an instance restarted since, its old heartbeat still "
                          "read?): " + fix)
    return out
