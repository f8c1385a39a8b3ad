"""The promotion gate counts the copies the shadow failed (README "From shadow to canary"):
a shadow that fails most of its copies and agrees on the rest does not get traffic."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.conftest import bearer, running_gateway, wait_until, write_config
from tests.shadow_backends import classify, v2_app, v2_request

Start = Callable[[web.Application], Awaitable[int]]
READ = bearer("killgate:read", "alice", 3 * 3600)
ROLLOUT = bearer("killgate:rollout killgate:read", "alice", 3 * 3600)


def failing_app() -> web.Application:
    """The reference model, whose answer to 9 inputs in 10 is larger than the shadow's
    `max_answer_bytes` (a copy the shadow failed: `answer_too_large`)."""
    async def infer(req: web.Request) -> web.StreamResponse:
        x = int(json.loads(await req.read())["inputs"][0]["data"][0])
        if x % 10:
            return web.json_response({"pad": "x" * 4096})
        return web.json_response({"model_name": "iris", "model_version": "v2",
                                  "outputs": [{"name": "probs", "shape": [1, 3],
                                               "datatype": "FP32", "data": classify(x)}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


def routes(p1: int, p2: int) -> str:
    return f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  protocol: v2
  shadow: {{version: v2, sample: 1.0, max_answer_bytes: 1024}}
  analysis: {{min_shadow_agreement: 0.9, min_shadow_compared: 10}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
"""


async def test_a_shadow_that_fails_its_copies_does_not_pass_the_gate(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """It failed 18 of 20 copies (answers over max_answer_bytes) and agreed on the other 2:
    that read as 100% agreement over... 2 comparisons, and with 10 more good ones the gate
    opened. Now a failed copy counts as compared and not agreed: 12 of 30."""
    p1 = await backends(v2_app("v1"))
    p2 = await backends(failing_app())
    cfg = write_config(tmp_path, routes(p1, p2))
    async with running_gateway(cfg) as g:
        for x in [*range(20), *range(100, 200, 10)]:  # 18 failures, 12 agreements
            async with session.post(g.url + "/v2/models/iris/infer", data=v2_request(x)) as r:
                assert r.status == 200

        async def rep() -> dict | None:  # type: ignore[type-arg]
            async with session.get(g.admin + "/v1/routes/iris/shadow", headers=READ) as r:
                d = dict(await r.json())
            return d if d["compared"] + d["copies"]["failed"] == 30 else None

        out = await wait_until(rep, 10)
        assert (out["compared"], out["agreed"], out["failures"]) == (
            12, 12, {"answer_too_large": 18})
        assert out["agreement"] == 1.0  # the comparisons alone (the metric's meaning)
        gate = out["gate"]
        assert gate["open"] is False, gate
        assert (gate["compared"], gate["failures"], gate["agreed"]) == (30, 18, 12)
        assert gate["agreement"] == 0.4
        assert "counting the 18 copies the shadow failed" in gate["reason"]
        async with session.put(g.admin + "/v1/routes/iris/weights", headers=ROLLOUT, json={
                "weights": {"v1": 90, "v2": 10}, "reason": "canary"}) as r:
            body = await r.json()
            assert (r.status, body["error"]["type"]) == (409, "shadow_agreement"), body
            msg = body["error"]["message"]
            assert "agreed with the primary on 12 of 30 compared requests (40.0%), counting " \
                "the 18 copies the shadow failed (answer_too_large 18) as compared and not " \
                "agreed" in msg, msg
        assert "iris" not in g.gw.holder.doc.overrides


def guarded_app() -> web.Application:
    """A model behind a token: 401 (the same answer from either version) without it, the
    reference answer with it."""
    async def infer(req: web.Request) -> web.StreamResponse:
        body = await req.read()
        if req.headers.get("authorization") != "Bearer ok":
            return web.json_response({"error": "unauthorized"}, status=401)
        x = int(json.loads(body)["inputs"][0]["data"][0])
        return web.json_response({"model_name": "iris", "outputs": [
            {"name": "probs", "shape": [1, 3], "datatype": "FP32", "data": classify(x)}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


@pytest.mark.timeout(30)
async def test_answers_both_sides_refused_alike_do_not_open_the_gate(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """100 requests both versions answered 401 (a scanner, a client without its token)
    counted as 100 agreements, so `min_shadow_compared: 100` was met without one model
    answer compared and the shadow could be given traffic. The gate counts only requests
    the primary answered 2xx; the report shows the others apart (`other_status`)."""
    p1, p2 = await backends(guarded_app()), await backends(guarded_app())
    cfg = write_config(tmp_path, routes(p1, p2).replace("min_shadow_compared: 10",
                                                        "min_shadow_compared: 100"))
    url = "/v2/models/iris/infer"
    async with running_gateway(cfg) as g:
        async def sent(n: int, headers: dict[str, str], status: int,
                       total: int) -> dict:  # type: ignore[type-arg]
            for x in range(n):
                async with session.post(g.url + url, data=v2_request(x), headers=headers) as r:
                    assert r.status == status
                    await r.read()

            async def rep() -> dict | None:  # type: ignore[type-arg]
                async with session.get(g.admin + "/v1/routes/iris/shadow", headers=READ) as r:
                    d = dict(await r.json())
                return d if d["compared"] == total else None
            return await wait_until(rep, 10, what=f"{total} compared")  # type: ignore[no-any-return]

        out = await sent(100, {}, 401, 100)
        assert (out["compared"], out["agreed"]) == (100, 100)  # the report's own: all of them
        gate = out["gate"]
        assert gate["open"] is False, gate
        assert (gate["compared"], gate["agreed"], gate["other_status"]) == (0, 0, 100), gate
        weights = {"weights": {"v1": 90, "v2": 10}, "reason": "canary"}
        async with session.put(g.admin + "/v1/routes/iris/weights", headers=ROLLOUT,
                               json=weights) as r:
            body = await r.json()
            assert (r.status, body["error"]["type"]) == (409, "shadow_agreement"), body
            msg = body["error"]["message"]
            assert "no comparison of its answers is known yet" in msg, msg
            assert "counting only requests the primary answered 2xx; 100 compared requests " \
                "the primary answered with another status (a 4xx, a 5xx) or an error body do " \
                "not count" in msg, msg
        assert "iris" not in g.gw.holder.doc.overrides
        # model answers compared: the gate opens on them
        out = await sent(100, {"authorization": "Bearer ok"}, 200, 200)
        assert out["gate"]["open"] is True, out["gate"]
        assert out["gate"]["compared"] == 100
        async with session.put(g.admin + "/v1/routes/iris/weights", headers=ROLLOUT,
                               json=weights) as r:
            assert r.status == 200, await r.text()


@pytest.mark.timeout(30)
async def test_an_older_instances_comparisons_are_not_said_to_be_of_other_statuses(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """In a rolling deploy an instance of the version before the 2xx-only gate publishes
    counts without `ok_outcomes`: the gate leaves them out (it cannot tell which were of
    2xx answers), but the report's `other_status` and the 409 said they were requests the
    primary answered with a 4xx or 5xx, sending the operator after errors there were
    none of. They are now said apart, as an older instance's (`older_instances`)."""
    p1, p2 = await backends(v2_app("v1")), await backends(v2_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2))
    async with running_gateway(cfg) as g:
        for x in range(5):
            async with session.post(g.url + "/v2/models/iris/infer", data=v2_request(x)) as r:
                assert r.status == 200
        mine = await wait_until(lambda: g.gw.mirror.tallies.get("iris") is not None and sum(
            g.gw.mirror.tallies["iris"].outcomes.values()) == 5 and g.gw.mirror.tallies["iris"],
            10, what="five comparisons")
        old = {k: v for k, v in mine.to_json().items() if not k.startswith("ok_")}
        old["outcomes"] = {"agreed": 7}
        await g.gw.sync.store.put_stats("shadow~iris", "old-1",
                                        {"instance": "old-1", "t": time.time(), "tally": old})
        async with session.get(g.admin + "/v1/routes/iris/shadow", headers=READ) as r:
            out = dict(await r.json())
        assert (out["compared"], out["agreed"]) == (12, 12), out
        gate = out["gate"]
        assert (gate["compared"], gate["other_status"], gate["older_instances"]) == (5, 0, 7), \
            gate
        assert "another status" not in gate["reason"], gate["reason"]
        assert "7 compared by instances of an older version" in gate["reason"], gate["reason"]


def unloaded_app() -> web.Application:
    """A model server that answers 200 with an error object for a model it has not loaded
    (some do), the reference answer once `loaded` is set."""
    async def infer(req: web.Request) -> web.StreamResponse:
        body = await req.read()
        if req.headers.get("x-loaded") != "1":
            return web.json_response({"error": "model 'iris' is not loaded"})
        x = int(json.loads(body)["inputs"][0]["data"][0])
        return web.json_response({"model_name": "iris", "outputs": [
            {"name": "probs", "shape": [1, 3], "datatype": "FP32", "data": classify(x)}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


@pytest.mark.timeout(30)
async def test_error_bodies_both_sides_sent_with_200_do_not_open_the_gate(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """Both versions answering 200 `{"error": "model 'iris' is not loaded"}` counted as
    agreements of model answers: 10 of them met `min_shadow_compared: 10` with no model
    answer compared, and the shadow could be given traffic. On a `protocol: v2` route they
    are counted apart (`other_status`), as a 4xx is."""
    p1, p2 = await backends(unloaded_app()), await backends(unloaded_app())
    cfg = write_config(tmp_path, routes(p1, p2))
    async with running_gateway(cfg) as g:
        async def sent(headers: dict[str, str], total: int) -> dict:  # type: ignore[type-arg]
            for x in range(10):
                async with session.post(g.url + "/v2/models/iris/infer", data=v2_request(x),
                                        headers=headers) as r:
                    assert r.status == 200
                    await r.read()

            async def rep() -> dict | None:  # type: ignore[type-arg]
                async with session.get(g.admin + "/v1/routes/iris/shadow", headers=READ) as r:
                    d = dict(await r.json())
                return d if d["compared"] == total else None
            return await wait_until(rep, 10, what=f"{total} compared")  # type: ignore[no-any-return]

        gate = (await sent({}, 10))["gate"]
        assert gate["open"] is False, gate
        assert (gate["compared"], gate["other_status"]) == (0, 10), gate
        gate = (await sent({"x-loaded": "1"}, 20))["gate"]
        assert gate["open"] is True and gate["compared"] == 10, gate
