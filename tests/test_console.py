"""The console's JSON endpoints (gateway/admin/console.py): whoami, fleet, traffic; in-process
gateways on a real local store or a real redis-server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.control.traffic import STATS_KEY
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    bearer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)

INFER = "/v2/models/iris/infer"


async def get(session: ClientSession, url: str, headers: dict[str, str] | None = None
              ) -> tuple[int, dict]:
    async with session.get(url, headers=headers or {}) as r:
        return r.status, await r.json()


async def test_whoami_reports_subject_scopes_and_what_they_allow(tmp_path: Path, backends,
                                                                 session) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        url = g.admin + "/v1/whoami"
        st, body = await get(session, url, bearer("killgate:read killgate:kill"))
        assert st == 200
        assert body == {"subject": "alice", "scopes": ["killgate:kill", "killgate:read"],
                        "can": {"read": True, "kill": True, "rollout": False, "alert": False,
                                "drill": False, "admin": False, "breakglass": False}}
        st, body = await get(session, url, bearer("killgate:admin", "root"))
        # admin implies every scope but break-glass (which skips the two-person rule)
        assert body["subject"] == "root" and [k for k, v in body["can"].items() if not v] == [
            "breakglass"]
        st, body = await get(session, url, bearer("killgate:alert"))  # the webhook's scope
        assert st == 200 and [k for k, v in body["can"].items() if v] == ["alert"]
        st, body = await get(session, url, bearer("killgate:drill"))  # a drill job's scope
        assert st == 200 and [k for k, v in body["can"].items() if v] == ["drill"]
        # without any Authorization header: nobody (how the page detects a signing proxy)
        st, body = await get(session, url)
        assert st == 200 and body["subject"] is None and not any(body["can"].values())
        # and not a failed authentication
        assert g.gw.metrics.get("killgate_auth_failures_total", ("401",)) == 0


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer x.y.z", "Basic YWxpY2U6eA==",
                                    "Bearer " + "a" * 8000])
async def test_whoami_with_a_bad_token_is_401_and_counted(header: str, tmp_path: Path,
                                                          backends, session) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        st, body = await get(session, g.admin + "/v1/whoami", {"Authorization": header})
        assert st == 401 and body["error"]["type"] == "invalid_token"
        # a presented token that fails is counted
        assert g.gw.metrics.get("killgate_auth_failures_total", ("401",)) == 1


async def test_an_expired_token_says_so(tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        st, body = await get(session, g.admin + "/v1/whoami", bearer("killgate:read", ttl=-120))
        assert st == 401 and body["error"]["type"] == "expired"


async def test_fleet_and_traffic_need_the_read_scope(tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        for path in ("/v1/fleet", "/v1/traffic"):
            st, body = await get(session, g.admin + path)
            assert st == 401, path
            st, body = await get(session, g.admin + path, bearer("killgate:kill"))
            assert st == 403 and body["error"] == {
                "type": "forbidden", "message": "the token lacks the scope 'killgate:read'"}


async def test_fleet_lists_every_instance_of_a_shared_store(tmp_path: Path, backends,
                                                            session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       state=(f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
                              f"  snapshot_path: {tmp_path}/snap.json\n  poll_interval: 50ms\n"
                              "  heartbeat_interval: 100ms\n  instance_lease: 1s\n"))
    async with running_gateway(cfg, "gw-a") as a, running_gateway(cfg, "gw-b"):
        url, auth = a.admin + "/v1/fleet", bearer("killgate:read")

        async def both_live() -> dict | None:
            st, body = await get(session, url, auth)
            assert st == 200
            return body if body["live"] == 2 else None

        body = await wait_until(both_live, 10, 0.05, "two live instances")
        rows = {r["instance"]: r for r in body["instances"]}
        assert set(rows) == {"gw-a", "gw-b"} and rows["gw-a"]["self"] and not rows["gw-b"]["self"]
        digest = a.gw.loaded.digest
        assert body["config_digest"] == digest and body["config_digests"] == 1
        for r in rows.values():
            assert r["config"] == digest and r["config_matches"] and r["live"]
            assert r["behind"] == 0 and r["generation"] == body["generation"]
            assert 0 <= r["seen_s_ago"] <= 1
        assert body["store"]["connected"] and body["store"]["fail_closed"] is False
        assert body["fleet_error"] is None and body["lease_s"] == 1


async def test_traffic_shows_each_version_and_says_whose_it_is(tmp_path: Path, backends,
                                                               session) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2", status=503))
    async with running_gateway(write_config(tmp_path, two_versions(p1, p2, 50, 50))) as g:
        started = time.time()
        for _ in range(20):
            async with session.post(g.url + INFER, data=b"{}") as r:
                await r.read()
        url, auth = g.admin + "/v1/traffic", bearer("killgate:read")

        async def counted() -> dict | None:
            st, body = await get(session, url, auth)
            assert st == 200
            iris = body["routes"].get("iris", {})
            n = sum(sum(v["requests"]) for v in iris.values())
            return body if n >= 20 else None

        body = await wait_until(counted, 15, 0.2, "the requests in whole buckets")
        assert body["scope"] == "fleet" and body["instances"] == ["test"]
        assert body["step_s"] == 5 and body["window_s"] == 300 and len(body["t"]) == 60
        assert body["end"] >= started and body["store_error"] is None
        v1, v2 = body["routes"]["iris"]["v1"], body["routes"]["iris"]["v2"]
        assert sum(v1["requests"]) + sum(v2["requests"]) >= 20
        assert sum(v1["errors"]) == 0 and sum(v2["errors"]) == sum(v2["requests"]) > 0
        assert max(r for r in v2["error_rate"] if r is not None) == 1.0
        assert all(x is None or x > 0 for x in v1["p99_ms"])


async def test_without_the_store_each_view_says_so(tmp_path: Path, backends, session,
                                                   redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    state = (f"state:\n  backend: redis\n  url: {redis_server.url}\n  prefix: kgcon\n"
             f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
             f"  snapshot_path: {tmp_path}/snap.json\n  poll_interval: 100ms\n"
             "  heartbeat_interval: 100ms\n  instance_lease: 1s\n  command_timeout: 200ms\n")
    async with running_gateway(write_config(tmp_path, two_versions(p, p), state=state)) as g:
        auth = bearer("killgate:read")
        redis_server.kill()
        await wait_until(lambda: not g.gw.sync.connected, 10, 0.05, "the store lost")
        st, fleet = await get(session, g.admin + "/v1/fleet", auth)
        assert st == 200 and fleet["store"]["connected"] is False
        assert fleet["fleet_error"] and fleet["instances"][0]["self"]
        assert fleet["instances"][0]["seen_s_ago"] is None
        st, traffic = await get(session, g.admin + "/v1/traffic", auth)
        assert st == 200 and traffic["scope"] == "instance" and traffic["store_error"]
        assert traffic["instances"] == ["test"]


async def test_a_view_prunes_gone_instances_from_redis(tmp_path: Path, backends, session,
                                                       redis_server: RedisServer) -> None:
    """A pod that died without a word leaves its counts behind; the next view removes them."""
    p = await backends(echo_app("v1"))
    state = (f"state:\n  backend: redis\n  url: {redis_server.url}\n  prefix: kgprune\n"
             f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
             f"  snapshot_path: {tmp_path}/snap.json\n  poll_interval: 100ms\n")
    async with running_gateway(write_config(tmp_path, two_versions(p, p), state=state)) as g:
        live = g.gw.traffic
        old = time.time() - 3 * live.window - 60
        gone = {"format": 1, "instance": "pod-gone", "t": old, "step": live.step, "routes": {}}
        await g.gw.sync.store.put_stats(STATS_KEY, "pod-gone", gone)
        await live.publish()
        key = f"kgprune:stats:{STATS_KEY}"
        assert redis_server.cmd("HLEN", key) == "2"
        st, body = await get(session, g.admin + "/v1/traffic", bearer("killgate:read"))
        assert st == 200 and body["instances"] == ["test"] and "pod-gone" not in body["silent"]
        assert redis_server.cmd("HLEN", key) == "1"
        assert redis_server.cmd("HEXISTS", key, "test") == "1"
