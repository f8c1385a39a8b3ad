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


async def test_check_notes_a_model_route_with_no_protocol(tmp_path: Path) -> None:
    """A route copied from an older example, or written from memory, without `protocol`:
    `killgate check` says what that costs and what to write (a note: exit 0)."""
    from tests.test_cli import acli

    routes = yaml.safe_load((CONFIG / "openai.yaml").read_text())["routes"]
    iris = yaml.safe_load((CONFIG / "minimal.yaml").read_text())["routes"]
    for r in [*routes, *iris]:
        del r["protocol"]
    iris[0]["shadow"] = {"version": "v2", "sample": 0.5}
    iris[0]["versions"][1]["weight"] = 0
    cfg = write_config(tmp_path, yaml.safe_dump([*routes, *iris], sort_keys=False))
    res = await acli("check", str(cfg))
    assert res.returncode == 0, res.stderr
    notes = [ln for ln in res.stderr.splitlines() if "protocol is http (the default)" in ln]
    assert [n.split(" (")[0] for n in notes] == [
        "note: routes[0]", "note: routes[1]", "note: routes[2]"], res.stderr
    assert "set protocol: openai" in notes[0] and "set protocol: v2" in notes[2]
    assert "a shadow compares whole JSON" in notes[2]
    for r in [*routes, *iris]:
        r["protocol"] = "http"  # (written out: the choice is made)
    cfg = write_config(tmp_path, yaml.safe_dump([*routes, *iris], sort_keys=False))
    res = await acli("check", str(cfg))
    assert res.returncode == 0 and "protocol is http" not in res.stderr, res.stderr
