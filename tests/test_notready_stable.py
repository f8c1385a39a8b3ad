"""Protocol-aware outcomes (CONTRACT §5.6): the stable is blamed for a "model not ready"
answer only for a model it has answered before (gateway/dataplane/servedmodels.py).

Before, any client naming a model that only a canary holds (a new model, or a new model
version in the v2 path) got the stable's not-found answer moved to the canary and counted
as the stable's failure: a few such requests ejected the healthy stable, and every client
of the route went to the canary. End to end on a real gateway and model servers, and the
pure parts without sockets."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.dataplane.jsonpeek import ModelField
from gateway.dataplane.servedmodels import MAX_SERVED, ServedModels, model_key
from gateway.domain.target import make_target
from tests.backends import v2_model_server
from tests.conftest import running_gateway, write_config

pytestmark = pytest.mark.timeout(30)

_BODY = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


def _routes(protocol: str, prefix: str, p1: int, p2: int, w1: int = 100) -> str:
    return f"""\
- name: models
  match: {{path_prefix: {prefix}}}
  protocol: {protocol}
  stable: v1
  outlier: {{consecutive_gateway_failures: 3, base_ejection: 30s}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: {w1}}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: {100 - w1}}}
"""


async def _served(s: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str]:
    async with s.post(url, **kw) as r:  # type: ignore[arg-type]
        await r.read()
        return r.status, r.headers.get("x-killgate-version", "")


@pytest.mark.parametrize("protocol", ["v2", "openai"])
async def test_a_model_only_the_canary_holds_does_not_eject_the_stable(
        tmp_path: Path, backends, protocol: str) -> None:
    flavour = "mlserver" if protocol == "v2" else "openai"
    p1 = await backends(v2_model_server("v1", {"iris"}, flavour=flavour))
    p2 = await backends(v2_model_server("v2", {"iris", "iris-next"}, flavour=flavour))
    prefix = "/v2/models" if protocol == "v2" else "/v1"
    cfg = write_config(tmp_path, _routes(protocol, prefix, p1, p2))

    def ask(model: str) -> tuple[str, dict[str, object]]:
        if protocol == "v2":
            return f"/v2/models/{model}/infer", {"json": _BODY}
        return "/v1/chat/completions", {"json": {"model": model, "messages": []}}

    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        path, kw = ask("iris")
        assert await _served(s, g.url + path, **kw) == (200, "v1")  # v1 answered iris
        path, kw = ask("iris-next")
        for _ in range(6):  # a client trying the new model (3 in a row ejected v1 before)
            assert await _served(s, g.url + path, **kw) == (200, "v2")
        path, kw = ask("iris")
        got = await _served(s, g.url + path, **kw)
        m = g.gw.metrics
        errors = m.get("killgate_upstream_errors_total", ("models", "v1", "not_ready"))
        ejections = m.get("killgate_upstream_ejections_total", ("models", "v1", "not_ready"))
    assert got == (200, "v1") and ejections == 0, (got, ejections)
    assert errors == 6  # (each still counted as what it was)


async def test_a_canary_lacking_a_model_the_stable_serves_is_still_ejected(
        tmp_path: Path, backends) -> None:
    """The other direction stays: the canary (all the traffic, here) lacks the model; each
    request moves to the stable, and the canary is ejected after three in a row, though it
    never answered that model (a canary that cannot serve what the stable does fails)."""
    p1 = await backends(v2_model_server("v1", {"iris"}))
    p2 = await backends(v2_model_server("v2", set()))
    cfg = write_config(tmp_path, _routes("v2", "/v2/models", p1, p2, w1=0))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        for _ in range(3):
            assert await _served(s, g.url + "/v2/models/iris/infer", json=_BODY) == (200, "v1")
        ejections = g.gw.metrics.get("killgate_upstream_ejections_total",
                                     ("models", "v2", "not_ready"))
    assert ejections == 1


def test_the_model_a_request_asks_for() -> None:
    def key(protocol: str, path: str, field: ModelField | None, body: bytes | None,
            complete: bool, method: bytes = b"POST") -> str | None:
        got = model_key(protocol, method, path, field, body, complete)
        if got is not None:  # (kept with the path it was asked on; on v2, the path up to
            # the model: its inference, metadata and readiness are one, test_notready_ready)
            assert got[0] == (path if protocol != "v2" else path[:path.rindex("/")])
        return None if got is None else got[1]

    assert key("v2", "/v2/models/iris/infer", None, None, False) == "iris"
    assert key("v2", "/v2/models/iris/versions/2/infer", None, None, False) \
        == "iris/versions/2"
    assert key("v2", "/v2/models/iris/versions/2/generate_stream", None, b"", True) \
        == "iris/versions/2"
    assert key("v2", "/v2/health/ready", None, None, True) is None
    body = b'{"messages": [], "model": "gpt"}'
    assert key("openai", "/v1/chat/completions", None, body, True) == "gpt"
    assert key("openai", "/v1/chat/completions", None, body, False) is None  # a prefix
    peeked = ModelField("gpt-4", 10, 17)  # (routing read it already)
    assert key("openai", "/v1/chat/completions", peeked, body, True) == "gpt-4"
    # a version whose `model` rewrites what routing read: its backend reads that one
    assert model_key("openai", b"POST", "/v1/chat/completions", peeked, body, True,
                     "gpt-4-0613") == ("/v1/chat/completions", "gpt-4-0613")
    for bad in (b"\xff\xfe", b"[1, 2]", b'{"model": 7}', b"not json",
                b'{"model": "a", "model": "b"}'):
        assert key("openai", "/v1/chat/completions", None, bad, True) is None
    # not an inference: says nothing of the models a version holds
    assert key("v2", "/v2/models/iris/infer", None, None, False, b"OPTIONS") is None
    assert key("openai", "/v1/models", None, body, True, b"GET") is None


def test_served_models_are_bounded_and_a_model_answered_again_is_kept() -> None:
    v1, v2 = make_target("r", "v1", "http://a:1", None, None), make_target(
        "r", "v2", "http://b:1", None, None)
    served = ServedModels()
    served.note(v1, ("/p", "iris"))
    for n in range(MAX_SERVED - 1):
        served.note(v1, ("/p", f"m{n}"))
    assert served.answered(v1, ("/p", "iris"))
    assert not served.answered(v2, ("/p", "iris"))
    assert not served.answered(v1, ("/q", "iris"))  # (another path)
    # (v1 at another url: a reload pointed it at another backend, which answered nothing)
    assert not served.answered(make_target("r", "v1", "http://c:1", None, None),
                               ("/p", "iris"))
    served.note(v1, ("/p", "one-more"))  # the least recently answered goes
    assert not served.answered(v1, ("/p", "iris"))
    served.note(v1, ("/p", "iris"))  # answered again: told again
    assert served.answered(v1, ("/p", "iris")) and len(served._seen) == MAX_SERVED
    served.note(v1, ("/p", "m2"))  # (m0 went for iris) answered again: the newest now
    served.note(v1, ("/p", "two-more"))
    served.note(v1, ("/p", "three-more"))  # m1 and m3 go, not m2
    assert served.answered(v1, ("/p", "m2")) and not served.answered(v1, ("/p", "m3"))
    served.note(v1, None)  # (a model not read is never noted, nor blamed)
    assert not served.answered(v1, None) and len(served._seen) == MAX_SERVED
