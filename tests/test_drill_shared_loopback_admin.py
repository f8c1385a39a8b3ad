"""Instances on several hosts that published one admin address are not a --workers group:
one not heard there is not taken for gone (control/drillbehind.py).

The admin listener defaults to 127.0.0.1:8081, so without `drills.advertise_host` every
instance of a fleet on several hosts publishes `http://127.0.0.1:8081`. After a restore the
drill took them for the workers of one `serve --workers N` (instances sharing an address),
asked that address up to asks_for(N) times, reached its own host's instance at most, and
took every other one for gone: an instance on another host, cut off from the store and
enforcing the drill's kill, let the drill pass. The workers of a group share their data
address too; instances that published different ones at one admin address are now named
`unasked` when not heard there (the drill fails, saying what to set). A real HTTP listener
answers as the instance the address reaches, with a real proof.
"""

from __future__ import annotations

import pytest
from aiohttp import ClientSession, web

from gateway.control.drillbehind import behind
from gateway.control.drillload import AdminClient
from gateway.domain.readyzproof import drill_keys, proof
from tests.test_drill_unproven import _listener, _operator

pytestmark = pytest.mark.timeout(30)

SECRET = b"l" * 32
DRILL, GEN = "d-9", 9


async def test_instances_of_several_hosts_at_one_admin_address_are_not_taken_for_gone(
        backends) -> None:
    me = ["a"]

    async def local(request: web.Request) -> web.Response:  # (this host's instance: a)
        name = me[0]
        doc: dict[str, object] = {"instance": name, "generation": GEN, "ready": True}
        doc["proof"] = proof("k1", SECRET, DRILL, name, GEN, request.query["nonce"])
        return web.json_response(doc)

    admin = await _listener(backends, local)
    keys = drill_keys({"k1": SECRET}, DRILL)
    at = {"a": admin, "b": admin}
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        hosts = await behind(api, ["a", "b"], at, GEN, DRILL, keys, data_of={
            "a": "http://host-1:8080", "b": "http://host-2:8080"})
        w0, w1 = "host-1-100-abcdef-w0", "host-1-101-abcdef-w1"  # (one group's workers)
        me[0] = w0
        workers = await behind(api, [w0, w1], {w0: admin, w1: admin}, GEN, DRILL, keys,
                               data_of={w0: "http://host-1:8080", w1: "http://host-1:8080"})
    assert hosts.late == [] and hosts.unverified_applied == [], hosts
    assert [(u["admin"], u["instances"]) for u in hosts.unasked] == [(admin, ["b"])], hosts
    why = hosts.unasked[0]["why"]
    assert "2 different data addresses" in why and "drills.advertise_host" in why, why
    assert any(p.startswith("not asked whether they applied the restore: b at ")
               for p in hosts.problems()), hosts.problems()
    # (one host's workers share their data address: a worker not heard there has left)
    assert workers.unasked == [] and workers.late == [], workers


async def test_instances_of_several_hosts_on_loopback_data_listeners_are_not_one_group(
        backends) -> None:
    """Two hosts each listening on loopback for data as for admin (127.0.0.1:8080 behind a
    sidecar, 127.0.0.1:8081) published one data address and one admin address: taken for
    one --workers group, the drill reached its own host's instance, took the other host's
    for gone, and passed while it enforced the drill's kill (cut off from the store).
    Their names are no one group's (host-1 and host-2; a group's workers share host and
    tag): the other one is `unasked` (the drill fails, saying why), not gone."""
    a, b = "host-1-100-abcdef", "host-2-100-123456"

    async def local(request: web.Request) -> web.Response:  # (this host's instance: a)
        doc: dict[str, object] = {"instance": a, "generation": GEN, "ready": True}
        doc["proof"] = proof("k1", SECRET, DRILL, a, GEN, request.query["nonce"])
        return web.json_response(doc)

    admin = await _listener(backends, local)
    keys = drill_keys({"k1": SECRET}, DRILL)
    async with ClientSession() as session:
        api = AdminClient(session, await _operator(backends), "t")
        found = await behind(api, [a, b], {a: admin, b: admin}, GEN, DRILL, keys,
                             data_of={a: "http://127.0.0.1:8080", b: "http://127.0.0.1:8080"})
    assert found.late == [] and found.applied == {a}, found
    assert [(u["admin"], u["instances"]) for u in found.unasked] == [(admin, [b])], found
    why = found.unasked[0]["why"]
    assert "no one --workers group's" in why and "drills.advertise_host" in why, why
