"""Every applied reload is audited, also a change back to a file the fleet ran before
(hostile config review): a revert and a re-deploy within the hour (A -> B -> A -> B) were
taken for the first A -> B by its one-hour claim, and the re-deploy, which made v2 stable
again, left no audit event."""

from __future__ import annotations

import time
from contextlib import suppress
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.control.confighistory import CLOCK_SLACK
from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(30)


async def test_a_redeploy_of_a_reverted_config_is_audited(tmp_path: Path, backends,
                                                          session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    a = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}), name="a.yaml")
    b = write_config(tmp_path, _route("iris", {"v2": (p2, 100), "v1": (p1, 0)}), name="b.yaml")
    cfg = tmp_path / "killgate.yaml"
    cfg.write_bytes(a.read_bytes())
    async with running_gateway(cfg) as g:
        async def deploy(src: bytes) -> None:
            # (a fleet's instances may see a change up to CLOCK_SLACK apart: a change back
            # sooner than that is taken for the same one)
            t = g.gw.history.since
            await wait_until(lambda: time.time() > t + CLOCK_SLACK, 5, interval=0.05)
            cfg.write_bytes(src)
            g.gw.request_reload()
            await wait_until(lambda: g.gw.loaded.raw == src, 10, what="reload")

        async def reloads() -> list[str]:
            async with session.get(f"{g.admin}/v1/audit?limit=100", headers=auth()) as r:
                events = (await r.json())["events"]
            return [e["after"]["digest"] for e in reversed(events)
                    if e["action"] == "config.reload"]

        digests = []
        for src in (b.read_bytes(), a.read_bytes(), b.read_bytes()):
            await deploy(src)
            digests.append(g.gw.loaded.digest)

            async def audited(n: int = len(digests)) -> bool:
                return len(await reloads()) >= n

            with suppress(AssertionError):  # (asserted below, with what was seen)
                await wait_until(audited, 3, interval=0.05, what="the reload's audit event")
        seen = await reloads()
        assert seen == digests, (seen, digests)


async def test_the_fleet_records_one_change_once(tmp_path: Path, backends,
                                                 session: ClientSession) -> None:
    """Two instances sharing a store, each with its copy of the file, make the same change:
    one event (and again one for the revert and one for the re-deploy)."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    # one store, each instance its own snapshot (the same in both copies: relative)
    state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
             "  snapshot_path: snapshot.json\n  poll_interval: 50ms\n")
    a = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}), name="a.yaml",
                     state=state)
    b = write_config(tmp_path, _route("iris", {"v2": (p2, 100), "v1": (p1, 0)}), name="b.yaml",
                     state=state)
    copies = [tmp_path / "one" / "killgate.yaml", tmp_path / "two" / "killgate.yaml"]
    for c in copies:
        c.parent.mkdir()
        c.write_bytes(a.read_bytes())
    async with running_gateway(copies[0], "one") as g1, \
            running_gateway(copies[1], "two") as g2:
        async def reloads() -> list[str]:
            async with session.get(f"{g1.admin}/v1/audit?limit=100", headers=auth()) as r:
                events = (await r.json())["events"]
            return [e["after"]["digest"] for e in reversed(events)
                    if e["action"] == "config.reload"]

        raw_a, raw_b = a.read_bytes(), b.read_bytes()
        for src in (raw_b, raw_a, raw_b):
            t = max(g1.gw.history.since, g2.gw.history.since)
            await wait_until(lambda t=t: time.time() > t + CLOCK_SLACK, 5, interval=0.05)
            for g, c in ((g1, copies[0]), (g2, copies[1])):
                c.write_bytes(src)
                g.gw.request_reload()
            for g in (g1, g2):
                await wait_until(lambda g=g, src=src: g.gw.loaded.raw == src, 10)
                # (its audit step done: `since` is its switch to this file)
                await wait_until(lambda g=g, t=t: g.gw.history.since > t + CLOCK_SLACK, 10)

        async def all_audited() -> bool:
            return len(await reloads()) >= 3

        with suppress(AssertionError):  # (asserted below, with what was seen)
            await wait_until(all_audited, 5, interval=0.05, what="three audit events")
        seen = await reloads()
        assert len(seen) == 3 and seen[0] == seen[2] == g1.gw.loaded.digest != seen[1], seen
