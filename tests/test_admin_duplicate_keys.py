"""A write whose JSON body names a field twice in one object is refused 400, nothing
changed: `{"weights": {"v1": 50, "v1": 60}}` took the last value silently (v2, named
nowhere, got weight 0: all of the traffic to v1), and `{"scope": "version", ...,
"scope": "global"}` was a global kill to killgate while a proxy or WAF reading the first
value saw a version kill. Found by the new-user review (revnewuser2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(30)
ADMIN = {**bearer("killgate:admin", "alice", 3 * 3600), "Content-Type": "application/json"}


async def _state(session: ClientSession, admin: str) -> tuple[object, object]:
    async with session.get(admin + "/v1/status", headers=ADMIN) as r:
        st = await r.json()
    route = st["routes"]["iris"]
    return (st["kills"], {n: v["effective_weight"] for n, v in route["versions"].items()})


@pytest.mark.parametrize("method, path, body, twice", [
    ("PUT", "/v1/routes/iris/weights",
     '{"weights": {"v1": 50, "v1": 60}, "reason": "even"}', "v1"),
    ("POST", "/v1/kill",
     '{"scope": "version", "route": "iris", "version": "v2", "scope": "global", '
     '"reason": "x"}', "scope"),
])
async def test_a_field_named_twice_is_refused_and_nothing_changes(
        tmp_path: Path, backends, session: ClientSession, method: str, path: str,
        body: str, twice: str) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        before = await _state(session, g.admin)
        async with session.request(method, g.admin + path, data=body, headers=ADMIN) as r:
            assert r.status == 400, await r.text()
            err = (await r.json())["error"]
        assert err["type"] == "bad_request"
        assert f"the body names '{twice}' twice in one object" in err["message"], err
        assert await _state(session, g.admin) == before == ([], {"v1": 90, "v2": 10})
        # the same write with each name once goes through
        async with session.request(method, g.admin + path, headers=ADMIN,
                                   data=body.replace('"v1": 60', '"v2": 60')
                                   .replace(', "scope": "global"', "")) as r:
            assert r.status == 200, await r.text()
