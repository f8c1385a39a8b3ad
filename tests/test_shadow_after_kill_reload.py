"""A shadow copy tapped before a kill of the shadow version (or the route), then a reload
that removes the route: the copy is not sent to what was killed. (From a third hostile
review.)
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.shadow_backends import chat_app, chat_request
from tests.test_killswitch import auth
from tests.test_shadow import route

pytestmark = pytest.mark.timeout(30)


def other(port: int) -> str:
    return textwrap.dedent(f"""\
        - name: other
          match: {{path_prefix: /v2/models/other}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        """)


@pytest.mark.parametrize("scope", ["version", "route"])
async def test_a_shadow_copy_is_not_sent_to_a_killed_version_after_a_reload_removes_the_route(
        tmp_path: Path, backends, scope: str) -> None:
    r2 = Recorder()
    p1 = await backends(chat_app("v1", delay=1.0))
    p2 = await backends(chat_app("v2", recorder=r2))
    p3 = await backends(echo_app("other"))
    shadow = "{version: v2, sample: 1.0, compare: openai_chat}"
    cfg = write_config(tmp_path, route(p1, p2, shadow, protocol="openai", prefix="/v1")
                       + other(p3))
    kill: dict[str, object] = {"scope": scope, "route": "iris", "abort_inflight": False,
                               "reason": "v2 leaks data"}
    if scope == "version":
        kill["version"] = "v2"
    async with running_gateway(cfg) as g, ClientSession() as session:
        call = asyncio.create_task(session.post(g.url + "/v1/chat/completions",
                                                data=chat_request(1),
                                                headers={"content-type": "application/json"}))
        await wait_until(lambda: g.gw.inflight.count == 1)
        async with session.post(f"{g.admin}/v1/kill?wait=2s", headers=auth(), json=kill) as r:
            assert r.status == 200, await r.text()
        killed_at = len(r2.requests)
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, other(p3), name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10)
        resp = await asyncio.wait_for(call, 10)
        assert resp.status == 200 and resp.headers["x-killgate-version"] == "v1"
        resp.release()
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: len(r2.requests) > killed_at, timeout=2)
    assert len(r2.requests) == killed_at, (
        f"a {scope} kill covering the shadow v2 was in force (receipt), a reload removed the "
        f"route, and the shadow copy still reached v2")
