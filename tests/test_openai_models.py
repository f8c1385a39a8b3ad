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
from tests.conftest import running_gateway, write_config

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
