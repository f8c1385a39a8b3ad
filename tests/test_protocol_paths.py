"""Protocol-aware outcomes (CONTRACT §5.6) on both forwarding paths: every "model not loaded /
not ready" answer the contract lists moves the request to the version that holds the model,
whether it came back to the fast path (a sized body sent from the parser callback on a pooled
connection, the answer told from the upstream callbacks) or to the slow path (a chunked body:
a coroutine), whether the backend wrote its answer in one piece or its head first, and
whatever the route's `retry` says. Answers that do not say so pass through unchanged."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import NOT_HELD, v2_model_server
from tests.conftest import free_port, running_gateway, wait_until, write_config

pytestmark = pytest.mark.timeout(30)

RETRY = {"none": "", "reset": "retry: {retry_on: [reset]}",
         "5xx": "retry: {retry_on: ['5xx'], attempts: 2, budget: 0.2}"}


def _route(protocol: str, flavour: str, p1: int, p2: int, retry: str) -> str:
    prefix = "/v1" if flavour == "openai" else "/v2/models/iris"
    return f"""\
- name: iris
  match: {{path_prefix: {prefix}}}
  protocol: {protocol}
  stable: v1
  outlier: {{enabled: false}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
  {RETRY[retry]}
"""


def _path(flavour: str) -> str:
    return NOT_HELD[flavour][0].format(model="iris")


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    yield body  # (aiohttp sends an async iterator chunked: the slow path reads it first)


async def _post(s: aiohttp.ClientSession, url: str, fast: bool) -> tuple[int, str, str, bytes]:
    body = json.dumps({"model": "iris", "inputs": []}).encode()
    data = body if fast else _chunked(body)
    async with s.post(url, data=data,
                      headers={"content-type": "application/json"}) as r:
        return (r.status, r.headers.get("x-killgate-version", ""),
                r.headers.get("x-killgate-decision", ""), await r.read())


async def _not_ready_case(tmp_path: Path, backends, protocol: str, flavour: str, split: bool,
                          retry: str, fast: bool, path: str | None = None,
                          ) -> tuple[tuple[int, str, str, bytes], float]:
    """v1 serves one request (its connection is pooled), then unloads the model; the next
    request goes to v1 on that pooled connection (sized body: the fast path) or on the slow
    path (chunked body). Its answer and the `not_ready` errors counted for v1."""
    held1 = {"iris"}
    p1 = await backends(v2_model_server("v1", held1, flavour, split))
    p2 = await backends(v2_model_server("v2", {"iris"}, flavour, split))
    cfg = write_config(tmp_path, _route(protocol, flavour, p1, p2, retry))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        url = g.url + _path(flavour)
        assert (await _post(s, url, True))[:3] == (200, "v1", "weighted")  # pools a connection
        assert [len(p.idle) for p in g.gw.upstreams.pools.values()] == [1]  # v1's
        held1.discard("iris")
        got = await _post(s, g.url + (path or _path(flavour)), fast)
        errors = g.gw.metrics.get("killgate_upstream_errors_total", ("iris", "v1", "not_ready"))
    return got, errors


CASES = [(f, split) for f in NOT_HELD for split in (False, True)]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "slow"])
@pytest.mark.parametrize("retry", list(RETRY))
@pytest.mark.parametrize("flavour, split", CASES,
                         ids=[f"{f}-{'split' if s else 'whole'}" for f, s in CASES])
async def test_a_not_ready_answer_moves_the_request_on_both_paths(
        tmp_path: Path, backends, flavour: str, split: bool, retry: str, fast: bool) -> None:
    protocol = "openai" if flavour == "openai" else "v2"
    (status, version, decision, body), errors = await _not_ready_case(
        tmp_path, backends, protocol, flavour, split, retry, fast)
    assert (status, version, decision) == (200, "v2", "failover"), body
    assert errors == 1  # counted for outlier detection, as not_ready


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "slow"])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("flavour", ["mlserver", "kserve"])
async def test_a_not_found_answer_off_the_infer_path_passes_through(
        tmp_path: Path, backends, flavour: str, split: bool, fast: bool) -> None:
    """A v2 route's 404/503 on a path that is not inference (model metadata) is the
    backend's answer to the client, as is."""
    want = NOT_HELD[flavour][1]
    (status, version, decision, body), errors = await _not_ready_case(
        tmp_path, backends, "v2", flavour, split, "none", fast, path="/v2/models/iris/ready")
    assert (status, version, decision) == (want, "v1", "weighted")
    assert json.loads(body) == NOT_HELD[flavour][2]("/v2/models/iris/ready")
    assert errors == 0


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "slow"])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("flavour", ["mlserver", "kserve"])
async def test_protocol_http_keeps_todays_behaviour(
        tmp_path: Path, backends, flavour: str, split: bool, fast: bool) -> None:
    """`protocol: http`: the same answers are the client's (a 5xx the route retries is
    retried as any 5xx: the other version answers, as a retry, not a not-ready move)."""
    (status, version, decision, body), errors = await _not_ready_case(
        tmp_path, backends, "http", flavour, split, "none", fast)
    assert (status, version, decision) == (NOT_HELD[flavour][1], "v1", "weighted")
    assert json.loads(body) == NOT_HELD[flavour][2]("iris")
    assert errors == 0
    (status, version, decision, body), errors = await _not_ready_case(
        tmp_path, backends, "http", flavour, split, "5xx", fast)
    if flavour == "kserve":
        assert (status, version) == (200, "v2")
    else:
        assert (status, version, decision) == (404, "v1", "weighted")
    assert errors == 0


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flavour", ["kserve", "openai"])
async def test_a_model_unloaded_under_keep_alive_load_costs_no_client_errors(
        tmp_path: Path, backends, gateway_procs, flavour: str) -> None:
    """A real `killgate serve` in front of two model servers that write an answer's head
    before its body; clients on kept-alive connections, so requests ride pooled backend
    connections (the fast path). v1 unloads the model mid-load: not one client error, the
    moves counted as not_ready, and the not-ready answers leave their connections pooled."""
    held1, peers = {"iris"}, set[object]()
    p1 = await backends(v2_model_server("v1", held1, flavour, split=True, peers=peers))
    p2 = await backends(v2_model_server("v2", {"iris"}, flavour, split=True))
    route = _route("openai" if flavour == "openai" else "v2", flavour, p1, p2, "reset")
    route = route.replace("weight: 0", "weight: 50").replace("weight: 100", "weight: 50")
    route = route.replace("outlier: {enabled: false}",
                          "outlier: {consecutive_gateway_failures: 1000, base_ejection: 30s}")
    cfg = write_config(tmp_path, route, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    url = gw.url + _path(flavour)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as s:
        async def client() -> None:
            while not stop.is_set():
                statuses[(await _post(s, url, True))[0]] += 1

        tasks = [asyncio.ensure_future(client()) for _ in range(8)]
        try:
            await wait_until(lambda: sum(statuses.values()) >= 200, 20, what="steady load")
            held1.discard("iris")
            at_unload, conns = sum(statuses.values()), len(peers)
            await wait_until(lambda: sum(statuses.values()) >= at_unload + 400, 30,
                             what="load after the unload")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        async with s.get(gw.admin + "/metrics") as r:
            text = await r.text()
    assert gw.stop() == 0, gw.output()
    assert statuses == {200: sum(statuses.values())}, statuses
    not_ready = _sample(text, "killgate_upstream_errors_total", route="iris", version="v1",
                        kind="not_ready")
    assert not_ready >= 100, not_ready  # about half of the 400 after the unload
    assert _sample(text, "killgate_failovers_total", route="iris") == not_ready
    # each not-ready answer was read whole and its connection pooled again: the requests
    # after it went out on pooled connections, from the parser callback (the fast path)
    assert len(peers) <= conns + 8, (conns, len(peers))
