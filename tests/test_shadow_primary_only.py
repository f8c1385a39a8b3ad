"""A shadow copy was compared with whatever version answered the client: a canary, a
version a client pinned, a version a request failed over to. The shadow's agreement then
measured it against a mix of models (found by review of the shadow comparison: a canary
that disagrees with the stable made a shadow identical to the stable look as if it
disagreed, and the promotion gate counted that). A copy is compared only with the route's
stable (its primary); a sampled request another version answered is sent nowhere and
counted apart, as `copies.not_compared`."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder
from tests.conftest import running_gateway, wait_until, write_config
from tests.shadow_backends import v2_app, v2_request
from tests.test_shadow import INFER, report

pytestmark = pytest.mark.timeout(30)


def _routes(p1: int, p2: int, p3: int) -> str:
    return f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  protocol: v2
  allow_pin: true
  timeouts: {{connect: 500ms, total: 5s}}
  shadow: {{version: v2, sample: 1.0, compare: v2_tensors}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
    - {{name: v3, url: "http://127.0.0.1:{p3}", weight: 0}}
"""


async def test_a_copy_is_compared_only_with_the_stables_answer(
        tmp_path: Path, backends, session: ClientSession) -> None:
    shadow = Recorder()
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", recorder=shadow))  # the stable's own model
    p3 = await backends(v2_app("v3", lambda x: "change"))  # a canary that moves every top class
    cfg = write_config(tmp_path, _routes(p1, p2, p3))
    async with running_gateway(cfg) as g:
        for x in range(6):
            pin = {"x-killgate-pin": "v3"} if x % 2 else {}
            async with session.post(g.url + INFER, data=v2_request(x), headers=pin) as r:
                assert r.status == 200
                assert r.headers["x-killgate-version"] == ("v3" if x % 2 else "v1")
                await r.read()

        async def counted() -> bool:
            rep = await report(session, g.admin)
            return bool(rep["compared"] + rep["copies"].get("not_compared", 0) >= 6)

        await wait_until(counted, 10, 0.05, "six sampled requests counted")
        rep = await report(session, g.admin)
    # the three the stable answered: compared, and the shadow (the stable's model) agreed
    assert rep["compared"] == 3 and rep["agreement"] == 1.0, rep
    assert rep["copies"]["not_compared"] == 3 and rep["copies"]["sent"] == 3, rep["copies"]
    assert len(shadow.requests) == 3  # the canary's answers were never copied
