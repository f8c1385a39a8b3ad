"""The models a version has answered are the answers of its backend, not of its name: a
reload that points a version at another url (a new deployment under the same name) starts
it afresh, as its health record does (control/probes.py), and it is not blamed for a model
only the backend it replaced answered. Real gateway, reload and model servers."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.backends import v2_model_server
from tests.conftest import running_gateway, wait_until, write_config
from tests.notreadyrig import v2_routes

pytestmark = pytest.mark.timeout(30)



async def _infer(s: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with s.post(url, json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                              "data": [1.0]}]}) as r:
        await r.read()
        return r.status, r.headers.get("x-killgate-version", "")


async def test_a_stable_moved_to_another_backend_is_not_blamed_for_the_old_ones_models(
        tmp_path: Path, backends) -> None:
    """The stable's old backend served iris; a reload points v1 at a new deployment that
    serves wine only (iris is the canary's now). Its "Model iris not found" counted: iris
    was noted as v1's, so three clients naming iris ejected the healthy stable and sent
    every client, wine's too, to the canary: the outage servedmodels.py is there to stop."""
    old = await backends(v2_model_server("old", {"iris"}))
    new = await backends(v2_model_server("new", {"wine"}))
    canary = await backends(v2_model_server("canary", {"iris", "wine"}))
    cfg = write_config(tmp_path, v2_routes(old, canary, 100))
    iris, wine = "/v2/models/iris/infer", "/v2/models/wine/infer"
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        assert await _infer(s, g.url + iris) == (200, "v1")  # the old backend answers iris
        digest = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, v2_routes(new, canary, 100), name="next.yaml")
                       .read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != digest, 10, what="the reload")
        got = [await _infer(s, g.url + iris) for _ in range(3)]  # moved to the canary
        after = await _infer(s, g.url + wine)
        ejections = g.gw.metrics.get("killgate_upstream_ejections_total",
                                     ("models", "v1", "not_ready"))
    assert got == [(200, "v2")] * 3, got
    assert (ejections, after) == (0, (200, "v1")), (ejections, after)
