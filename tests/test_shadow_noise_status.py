"""A noise pair whose two primary answers differ in HTTP status is not evidence of noise
(README "The noise floor"): it is discarded as a noise sample, so it never excuses the
shadow's difference, for its own request nor (as a learned path) for the others."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.config_shadow import ShadowConfig
from gateway.domain.compare import DISAGREED, NOISE
from gateway.domain.comparison import Answer
from gateway.domain.verdict import verdict
from tests.conftest import running_gateway, write_config
from tests.shadow_backends import classify, v2_request
from tests.test_shadow import INFER, route, send_all, settled

Start = Callable[[web.Application], Awaitable[int]]
pytestmark = pytest.mark.timeout(60)


def model(second: int | None = None, always: int | None = None) -> web.Application:
    """The reference model; `second`: the status of its second answer to an input (the
    noise floor's call, once the client's answer is out); `always`: of every answer."""
    calls: dict[int, int] = {}

    async def infer(req: web.Request) -> web.StreamResponse:
        x = int(json.loads(await req.read())["inputs"][0]["data"][0])
        calls[x] = calls.get(x, 0) + 1
        status = always or (second if second is not None and calls[x] == 2 else 200)
        if status != 200:
            return web.json_response({"error": "busy"}, status=status)
        return web.json_response({"outputs": [{"name": "probs", "shape": [1, 3],
                                               "datatype": "FP32", "data": classify(x)}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


async def test_a_primary_that_was_busy_on_its_noise_call_excuses_no_failing_shadow(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """The primary answered the client 200 and its noise call 429 (rate limited); the
    shadow answered 500 every time. Each request's difference (status) sat on the path
    where the primary "disagreed with itself", so all 20 counted as agreed (noise)."""
    p1 = await backends(model(second=429))
    p2 = await backends(model(always=500))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, noise: "
                                               "{sample: 1.0, min_pairs: 5}}"))
    async with running_gateway(cfg) as gw:
        out = await send_all(session, gw.url + INFER, [v2_request(x) for x in range(20)])
        assert {s for s, _, _ in out} == {200}
        rep = await settled(session, gw.admin, 20)
    assert rep["outcomes"]["disagreed"] == 20 and rep["agreed"] == 0, rep
    assert rep["differences"] == {"status": 20}
    assert rep["noise"] == {"pairs": 0, "paths": {}}  # discarded: nothing learned from them


SH = ShadowConfig.model_validate({"version": "v2", "sample": 1.0, "noise": {"sample": 1.0}})
OK = Answer(200, json.dumps({"outputs": [{"name": "probs", "shape": [1, 3], "datatype": "FP32",
                                          "data": [0.1, 0.2, 0.7]}]}).encode(),
            "application/json")


@pytest.mark.parametrize("again", [Answer(429, b"{}"), Answer(503, b"busy")])
def test_a_noise_pair_of_two_statuses_is_discarded(again: Answer) -> None:
    v = verdict(SH, "v2", b"{}", OK, Answer(500, b"oops"), again, frozenset())
    assert v.outcome == DISAGREED and v.noise is None, v
    # the same pair with the same status still is a noise sample
    jitter = Answer(200, OK.body.replace(b"0.7", b"0.70001"), "application/json")
    v = verdict(SH, "v2", b"{}", OK, Answer(200, OK.body.replace(b"0.7", b"0.70002"),
                                            "application/json"), jitter, frozenset())
    assert v.outcome == NOISE and v.noise is not None
