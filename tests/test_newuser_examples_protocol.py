"""The starting points README gives a new user, config/minimal.yaml (a V2 path) and
config/openai.yaml (OpenAI-compatible servers), declare their backends' `protocol`, so a
canary that unloads its model has its requests moved on, as README promises, and not
answered 404 to its users (found by revnewuser9: copied as README says, both routed as
`http`, and every sticky user of the canary got the backend's 404 until it was reloaded).
Real gateway and model servers, the examples' own routes with their urls pointed at them."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.backends import v2_model_server
from tests.conftest import running_gateway, write_config

pytestmark = pytest.mark.timeout(60)
CONFIG = Path(__file__).parent.parent / "config"


@pytest.mark.parametrize("example", ["minimal.yaml", "openai.yaml"])
async def test_the_examples_move_a_request_off_a_canary_that_unloaded_its_model(
        tmp_path: Path, backends, example: str) -> None:
    route = yaml.safe_load((CONFIG / example).read_text())["routes"][0]
    v2 = example == "minimal.yaml"
    held: dict[str, set[str]] = {}
    for v in route["versions"]:
        held[v["name"]] = {v.get("model") or "iris"}
        port = await backends(v2_model_server(v["name"], held[v["name"]],
                                              flavour="mlserver" if v2 else "openai"))
        v["url"] = f"http://127.0.0.1:{port}"
    route["sticky"] = {"header": "x-user-id"}
    canary = next(v["name"] for v in route["versions"] if v["name"] != route["stable"])
    path = "/v2/models/iris/infer" if v2 else "/v1/chat/completions"
    body = ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
            if v2 else {"model": route["match"]["model"], "messages": []})
    cfg = write_config(tmp_path, yaml.safe_dump([route], sort_keys=False))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        async def ask(user: str) -> tuple[int, str]:
            async with s.post(g.url + path, json=body, headers={"x-user-id": user}) as r:
                await r.read()
                return r.status, r.headers.get("x-killgate-version", "")

        users = [u for u in (f"user{n}" for n in range(400))
                 if await ask(u) == (200, canary)][:3]
        assert users, "no user landed on the canary"
        held[canary].clear()  # the canary unloads its model
        got = [await ask(u) for u in users]
    assert got == [(200, route["stable"])] * len(users), got
