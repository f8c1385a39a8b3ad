"""A rollback racing a reload that removes its target (a fleet mid-deploy, each instance on
its own copy of the file): made through an instance still on the old file, it left the
instance already on the new one serving nothing on the route (NOT SERVING, 503), while the
instance it was made through refused the file. Had the rollback come first, both would have
refused the file and served the rollback's version: that instance now takes its reload back
(control/reloadback.py), says why, and takes the file up again once the rollback is
released. Two `Gateway`s on one real redis-server."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    wait_until,
    write_config,
)
from tests.staterig import redis_section
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(60)

ROLLOUT = "killgate:rollout killgate:read"


async def _served(session: ClientSession, url: str) -> set[str]:
    seen = set()
    for i in range(6):
        async with session.get(f"{url}/v2/models/iris/x", headers={"x-user": str(i)}) as r:
            seen.add(f"{r.status} {r.headers.get('x-killgate-version')}")
    return seen


async def test_a_reload_is_taken_back_when_a_rollback_made_elsewhere_needs_what_it_dropped(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer) -> None:
    p1, p2, p3 = [await backends(echo_app(v)) for v in ("v1", "v2", "v3")]
    state = redis_section(redis_server.url, "tb", "snapshot.json", poll_interval="100ms")
    old = write_config(tmp_path, _route("iris", {"v2": (p2, 100), "v1": (p1, 0)}),
                       name="old.yaml", state=state).read_bytes()
    new = write_config(tmp_path, _route("iris", {"v2": (p2, 100), "v3": (p3, 0)}),
                       name="new.yaml", state=state).read_bytes()
    copies = [tmp_path / d / "killgate.yaml" for d in ("one", "two")]
    for c in copies:
        c.parent.mkdir()
        c.write_bytes(old)
        c.chmod(0o600)
    async with running_gateway(copies[0], "one") as g1, \
            running_gateway(copies[1], "two") as g2:
        w1 = g1.gw.watcher
        assert w1 is not None
        copies[0].write_bytes(new)  # the deploy reaches `one` first: v1 gone there
        g1.gw.request_reload()
        await wait_until(lambda: g1.gw.loaded.raw == new, 10, what="one's reload")
        before = g1.gw.loaded.digest
        # v2 goes bad: the on-call rolls back to v1 through `two`, still on the old file
        async with session.post(f"{g2.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                                json={"to": "v1", "reason": "INC-9: v2 is bad"}) as r:
            assert r.status == 200, await r.text()
        assert await _served(session, g2.url) == {"200 v1"}
        # before: `one` served nothing on iris (503, NOT SERVING) until a release
        await wait_until(lambda: g1.gw.loaded.raw == old, 10, what="the reload taken back")
        assert await _served(session, g1.url) == {"200 v1"}
        assert w1.outcome.loaded_digest == g1.gw.loaded.digest != before
        async with session.get(f"{g1.admin}/v1/status", headers=auth()) as r:
            conf = (await r.json())["config"]
        err, [warning] = conf["last_error"], conf["warnings"]
        assert "INC-9" in err and "killgate release iris" in err, err
        assert f"the reload to {before} was taken back" in warning and "INC-9" in warning, \
            warning
        # the file itself, read again while the rollback stands: refused, not applied
        g1.gw.request_reload()
        await wait_until(lambda: w1.outcome.last_error is not None
                         and "taken back" not in w1.outcome.last_error, 10, what="re-read")
        assert g1.gw.loaded.raw == old and "latched at runtime" in w1.outcome.last_error
        # the rollback released: the file goes live (read again as the state changes)
        async with session.post(f"{g2.admin}/v1/routes/iris/release", headers=auth(ROLLOUT),
                                json={"reason": "INC-9 over"}) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: g1.gw.loaded.raw == new and w1.outcome.last_error is None,
                         10, what="the file live again")
        assert await _served(session, g1.url) == {"200 v2"}

        async def changes() -> list[str]:
            async with session.get(f"{g1.admin}/v1/audit?limit=50", headers=auth()) as r:
                events = (await r.json())["events"]
            return [e["after"]["digest"] for e in reversed(events)
                    if e["action"] == "config.reload"]

        async def three() -> bool:
            return len(await changes()) >= 3

        # (the take-back is a change of its own, audited as one; each event is appended
        # after its swap)
        with suppress(AssertionError):  # (asserted below, with what was seen)
            await wait_until(three, 5, interval=0.05, what="three config.reload events")
        seen = await changes()
        assert seen == [before, g2.gw.loaded.digest, before], seen


def test_only_a_reload_that_changed_nothing_but_the_latched_route_is_taken_back(
        tmp_path: Path) -> None:
    """Pure (domain/droppedlatch.taken_back): a reload that also changed another route (a
    fix shipped with it) is not taken back, nor one whose config before lacks the version
    too; nothing is when the override is servable."""
    from gateway.configfile import load_config
    from gateway.domain.droppedlatch import taken_back
    from gateway.domain.statedoc import RouteOverride, StateDoc

    def routes(text: str, name: str) -> list:
        return list(load_config(write_config(tmp_path, text, name=name)).config.routes)

    other = _route("other", {"o1": (9001, 100)})
    before = routes(_route("iris", {"v2": (9002, 100), "v1": (9003, 0)}) + other, "a.yaml")
    now = routes(_route("iris", {"v2": (9002, 100), "v3": (9004, 0)}) + other, "b.yaml")
    fixed = routes(_route("iris", {"v2": (9002, 100), "v3": (9004, 0)})
                   + _route("other", {"o1": (9005, 100)}), "c.yaml")
    rollback = StateDoc(overrides={"iris": RouteOverride(
        "v1", {"v1": 100.0, "v2": 0.0}, "alice", "INC-9", "t", "rollback")})
    [(path, msg)] = taken_back(rollback, now, before)
    assert path == "routes[0].versions" and "'v1'" in msg and "INC-9" in msg
    assert taken_back(rollback, fixed, before) == []  # (other's new url stays)
    assert taken_back(rollback, now, now) == []  # (the one before lacks v1 too)
    assert taken_back(StateDoc(), now, before) == []
    to_v2 = StateDoc(overrides={"iris": RouteOverride(
        "v2", {"v2": 100.0}, "alice", "r", "t", "rollback")})
    assert taken_back(to_v2, now, before) == []


def test_a_reload_that_also_changed_the_latched_route_itself_is_not_taken_back(
        tmp_path: Path) -> None:
    """Pure (domain/droppedlatch.taken_back): found by review (revmerge16): "changed
    nothing else" compared the other routes and the settings, not the latched route's own
    fields: a reload that dropped v1 AND narrowed the route's match (a bypass closed), or
    moved a version it kept off a host (a compromised backend), was taken back, the fix
    undone by a rollback made elsewhere (or by anyone who can write the state). Only the
    versions the override needs, the stable and the weights may differ."""
    from gateway.configfile import load_config
    from gateway.domain.droppedlatch import taken_back
    from gateway.domain.statedoc import RouteOverride, StateDoc

    def routes(text: str, name: str) -> list:
        return list(load_config(write_config(tmp_path, text, name=name)).config.routes)

    before = routes(_route("iris", {"v2": (9002, 100), "v1": (9003, 0)}), "a.yaml")
    rollback = StateDoc(overrides={"iris": RouteOverride(
        "v1", {"v1": 100.0, "v2": 0.0}, "alice", "INC-9", "t", "rollback")})
    narrowed = routes(_route("iris", {"v2": (9002, 100), "v3": (9004, 0)}).replace(
        "/v2/models/iris", "/v2/models/iris/infer"), "b.yaml")
    moved = routes(_route("iris", {"v2": (9005, 100), "v3": (9004, 0)}), "c.yaml")
    timeouts = routes(_route("iris", {"v2": (9002, 100), "v3": (9004, 0)},
                             "  allow_pin: true\n"), "d.yaml")
    assert taken_back(rollback, narrowed, before) == []  # (the narrowed match stays)
    assert taken_back(rollback, moved, before) == []  # (v2's new url stays)
    assert taken_back(rollback, timeouts, before) == []  # (any other route key stays)
    # the stable and the weights may differ (dropping a version moves its weight)
    reweighted = routes(_route("iris", {"v3": (9004, 100), "v2": (9002, 0)}), "e.yaml")
    assert [p for p, _ in taken_back(rollback, reweighted, before)] == ["routes[0].versions"]
