"""Protocol-aware outcomes (CONTRACT §5.6) for a request whose body streamed (over 64 KiB:
an image tensor, a long prompt): its "model not loaded" answer cannot move it (the body is
not held to send again), so it reaches the client, but it still counts against the version
that gave it, for a model that version has answered before (it unloaded it).

Found by revnewuser9, following README's promise that "a version that unloaded its model is
ejected after `consecutive_gateway_failures`": with a realistic 100 KB V2 request, the canary
that unloaded its model answered 404 to every request sent its way, each counted as an "ok"
answer, and was never ejected: its sticky users got 404s until someone noticed. Real gateway
and model servers."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import aiohttp
import pytest

from tests import cli_fork
from tests.backends import v2_model_server
from tests.conftest import admin_token, running_gateway, write_config
from tests.notreadyrig import v2_routes

pytestmark = pytest.mark.timeout(30)

#: a request body the gateway streams (over the 64 KiB it holds to send again)
_DATA = [0.5] * 20000



def _ask(model: str) -> tuple[str, dict[str, object]]:
    return f"/v2/models/{model}/infer", {"json": {"inputs": [
        {"name": "x", "shape": [len(_DATA)], "datatype": "FP32", "data": _DATA}]}}


async def _served(s: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str]:
    async with s.post(url, **kw) as r:  # type: ignore[arg-type]
        await r.read()
        return r.status, r.headers.get("x-killgate-version", "")


@pytest.mark.parametrize("flavour", ["mlserver", "triton", "kserve"])
async def test_a_canary_that_unloads_its_model_is_ejected_on_streamed_requests(
        tmp_path: Path, backends, flavour: str) -> None:
    """(An `openai` route reads a JSON body's `model` from a body it holds whole up to
    `server.model_peek_bytes`, which it can send again; one past that is 400. A form past
    it streams: tests/test_notready_credentials.py.)"""
    held = {"iris"}
    p1 = await backends(v2_model_server("v1", {"iris"}, flavour=flavour))
    p2 = await backends(v2_model_server("v2", held, flavour=flavour))
    cfg = write_config(tmp_path, v2_routes(p1, p2, 0))
    path, kw = _ask("iris")
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        assert await _served(s, g.url + path, **kw) == (200, "v2")  # the canary serves iris
        held.discard("iris")  # ... and unloads it
        got = [await _served(s, g.url + path, **kw) for _ in range(3)]
        after = await _served(s, g.url + path, **kw)
        m = g.gw.metrics
        errors = m.get("killgate_upstream_errors_total", ("models", "v2", "not_ready"))
        ejections = m.get("killgate_upstream_ejections_total", ("models", "v2", "not_ready"))
    # the body streamed: those cannot move, and reach the client as the backend said them
    status = {"triton": 400, "kserve": 503}.get(flavour, 404)
    assert got == [(status, "v2")] * 3, got
    # but they count: ejected after 3 in a row, the next request goes to the stable
    assert (errors, ejections) == (3, 1), (errors, ejections)
    assert after == (200, "v1"), after


async def test_a_model_the_canary_never_served_does_not_eject_it_on_streamed_requests(
        tmp_path: Path, backends) -> None:
    """The other direction: a client naming a model (or model version) no version holds,
    with a body that streams, cannot eject the healthy canary (its not-found answers are the
    client's mistake; none of them can be asked of another version to tell)."""
    p1 = await backends(v2_model_server("v1", {"iris"}))
    p2 = await backends(v2_model_server("v2", {"iris"}))
    cfg = write_config(tmp_path, v2_routes(p1, p2, 0))
    path, kw = _ask("iris")
    bogus, _ = _ask("nosuchmodel")
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        assert await _served(s, g.url + path, **kw) == (200, "v2")
        got = [await _served(s, g.url + bogus, **kw) for _ in range(5)]
        after = await _served(s, g.url + path, **kw)
        ejections = g.gw.metrics.get("killgate_upstream_ejections_total",
                                     ("models", "v2", "not_ready"))
    assert got == [(404, "v2")] * 5 and ejections == 0, (got, ejections)
    assert after == (200, "v2")


async def test_status_says_why_a_version_is_out(tmp_path: Path, backends) -> None:
    """`killgate status` showed an ejected canary as `healthy NO` on a route with no health
    checks (found by revnewuser9 at step 4: which probe failed?): the cell says it was
    ejected, for which answers (`/v1/status`'s `health.ejected_cause`, the metric's `kind`),
    and for how long still."""
    held = {"iris"}
    p1 = await backends(v2_model_server("v1", {"iris"}))
    p2 = await backends(v2_model_server("v2", held))
    cfg = write_config(tmp_path, v2_routes(p1, p2, 0))
    path, kw = _ask("iris")
    token = admin_token("killgate:read", "t", 3600)
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        assert await _served(s, g.url + path, **kw) == (200, "v2")
        held.discard("iris")
        for _ in range(3):
            await _served(s, g.url + path, **kw)
        res = await asyncio.to_thread(cli_fork.run, ["status", "--admin", g.admin, "--token",
                                                     token], dict(os.environ), os.getcwd(), 30)
        async with s.get(g.admin + "/v1/status",
                         headers={"Authorization": f"Bearer {token}"}) as r:
            doc = await r.json()
    code, out, err = res.returncode, res.stdout, res.stderr
    assert code == 0, err
    row = next(x for x in out.splitlines() if x.startswith("models") and " v2 " in x)
    assert re.search(r"NO \(ejected for not_ready, \d+s left\)", row), row
    versions = doc["routes"]["models"]["versions"]
    assert versions["v2"]["health"]["ejected_cause"] == "not_ready", versions
    assert versions["v1"]["health"]["ejected_cause"] is None, versions
