"""`GET /v1/models` on config/openai.yaml (routes matched by the body's `model`): OpenAI
SDKs call it at start-up, and it answered 404 `no_route` (it has no body). The gateway now
answers it with the names its clients send, as Envoy AI Gateway and LiteLLM do (a backend
would list its own model name, which a version may rewrite, and only its own):
gateway/domain/modellist.py. Real gateway, real backends, the example's own routes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.backends import echo_app
from tests.conftest import bearer, free_port, running_gateway, write_config

pytestmark = pytest.mark.timeout(60)
EXAMPLE = Path(__file__).parent.parent / "config" / "openai.yaml"


async def test_get_v1_models_lists_the_models_the_routes_take(tmp_path: Path, backends,
                                                             session) -> None:
    small, large = await backends(echo_app("small")), await backends(echo_app("large"))
    routes = yaml.safe_load(EXAMPLE.read_text())["routes"]
    for r in routes:
        for v in r["versions"]:
            v["url"] = f"http://127.0.0.1:{small if r['name'] == 'chat-small' else large}/openai"
    cfg = write_config(tmp_path, yaml.safe_dump(routes, sort_keys=False))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/v1/models") as r:
            assert (r.status, r.content_type) == (200, "application/json")
            listing = await r.json()
        assert listing["object"] == "list"
        assert [m["id"] for m in listing["data"]] == ["chat-small", "chat-large"]
        assert all(m["object"] == "model" for m in listing["data"])
        async with session.get(g.url + "/v1/models/chat-large") as r:
            assert r.status == 200 and (await r.json())["id"] == "chat-large"
        async with session.head(g.url + "/v1/models") as r:  # (as GET, without the body)
            assert r.status == 200 and int(r.headers["content-length"]) > 0
            assert await r.read() == b""
        async with session.get(g.url + "/v1/models/gpt-4") as r:  # no route takes it
            assert (r.status, (await r.json())["error"]["type"]) == (404, "no_route")
        async with session.get(g.url + "/v2/models") as r:  # under no model route's prefix
            assert r.status == 404
        async with session.post(g.url + "/v1/models", json={}) as r:  # only GET is listed
            assert r.status == 404
        # the model itself is still routed to its server, its name rewritten
        async with session.post(g.url + "/v1/chat/completions",
                                json={"model": "chat-small"}) as r:
            assert r.status == 200
            got = await r.json()
        assert got["version"] == "small" and got["path"] == "/openai/v1/chat/completions"
        assert '"llama-3-8b-instruct-v' in got["body"]


async def test_a_route_for_the_listing_itself_still_gets_it(tmp_path: Path, backends,
                                                           session) -> None:
    p, lister = await backends(echo_app("m")), await backends(echo_app("lister"))
    routes = f"""\
- name: chat
  match: {{path_prefix: /v1, model: m}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}]
- name: models
  match: {{path_prefix: /v1/models}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{lister}", weight: 100}}]
"""
    async with running_gateway(write_config(tmp_path, routes)) as g, \
            session.get(g.url + "/v1/models") as r:
        assert r.status == 200 and (await r.json())["version"] == "lister"


async def test_a_killed_model_is_not_listed(tmp_path: Path, backends, session) -> None:
    """Found by review of the listing: a killed route's model was still listed (a UI that
    picks the first model listed, or a client checking the listing before it asks, chose
    it and got 503 killed), and `GET /v1/models/<killed>` described it as available. Now
    a kill (of the route, or of every version) takes it off the listing, asking for it by
    name answers the kill's 503 (never the route's fallback, a chat answer with a 200:
    "it exists"), and an unkill lists it again."""
    a, b = await backends(echo_app("a")), await backends(echo_app("b"))
    routes = f"""\
- name: chat-a
  match: {{path_prefix: /v1, model: gpt-a}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{a}", weight: 100}}]
  fallback: {{status: 200, json: {{choices: []}}}}
- name: chat-b
  match: {{path_prefix: /v1, model: gpt-b}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{b}", weight: 100}}]
"""
    h = bearer("killgate:admin", "ops", 3600)

    async def listed() -> list[str]:
        async with session.get(g.url + "/v1/models") as r:
            assert r.status == 200, await r.text()
            return [m["id"] for m in (await r.json())["data"]]

    async with running_gateway(write_config(tmp_path, routes)) as g:
        assert await listed() == ["gpt-a", "gpt-b"]
        async with session.post(g.admin + "/v1/kill", headers=h, json={
                "scope": "route", "route": "chat-a", "reason": "bad model"}) as r:
            assert r.status == 200, await r.text()
        assert await listed() == ["gpt-b"]
        async with session.get(g.url + "/v1/models/gpt-a") as r:
            assert (r.status, (await r.json())["error"]["type"]) == (503, "killed")
        async with session.post(g.url + "/v1/chat/completions", json={"model": "gpt-a"}) as r:
            assert (r.status, await r.json()) == (200, {"choices": []})  # (its fallback)
        async with session.post(g.admin + "/v1/kill", headers=h, json={
                "scope": "version", "route": "chat-b", "version": "v1",
                "reason": "bad build"}) as r:
            assert r.status == 200, await r.text()
        assert await listed() == []  # (every model killed: an empty list, not a 404)
        async with session.post(g.admin + "/v1/unkill", headers=h, json={
                "scope": "route", "route": "chat-a", "reason": "fixed"}) as r:
            assert r.status == 200, await r.text()
        assert await listed() == ["gpt-a"]
        async with session.get(g.url + "/v1/models/gpt-a") as r:
            assert r.status == 200 and (await r.json())["id"] == "gpt-a"


async def test_the_listing_waits_for_the_kill_state(tmp_path: Path, backends, session) -> None:
    """With the kill state not loaded (the store unreachable, no snapshot) every route
    answers 503 state_unknown; the listing cannot tell which models are killed either, so
    it says so, rather than listing every one."""
    a = await backends(echo_app("a"))
    routes = f"""\
- name: chat-a
  match: {{path_prefix: /v1, model: gpt-a}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{a}", weight: 100}}]
"""
    state = (f"state:\n  backend: redis\n  url: redis://127.0.0.1:{free_port()}\n"
             f"  prefix: kgtest\n  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
             f"  command_timeout: 300ms\n")
    async with running_gateway(write_config(tmp_path, routes, state=state)) as g:
        async with session.post(g.url + "/v1/chat/completions", json={"model": "gpt-a"}) as r:
            assert (r.status, (await r.json())["error"]["type"]) == (503, "state_unknown")
        for path in ("/v1/models", "/v1/models/gpt-a"):
            async with session.get(g.url + path) as r:
                assert (r.status, (await r.json())["error"]["type"]) == (503, "state_unknown")
                assert r.headers["retry-after"] == "1"
