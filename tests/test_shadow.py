"""Shadow traffic end to end (dataplane/shadow.py): an in-process gateway in front of two
real model backends (aiohttp servers on loopback) that agree on some inputs and disagree
on others, so the true agreement rate is known; the mirror's guarantees to the client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from tests.backends import RawBackend, Recorder, echo_app, hang_app
from tests.conftest import bearer, running_gateway, wait_until, write_config
from tests.shadow_backends import chat_app, chat_request, v2_app, v2_request

Start = Callable[[web.Application], Awaitable[int]]
INFER = "/v2/models/iris/infer"
CHAT = "/v1/chat/completions"
READ = bearer('killgate:read', 't', 10800)
KILL = bearer('killgate:kill', 't', 10800)


def route(p1: int, p2: int, shadow: str, protocol: str = "v2",
          prefix: str = "/v2/models/iris", extra: str = "", total: str = "5s") -> str:
    return f"""\
- name: iris
  match: {{path_prefix: {prefix}}}
  stable: v1
  protocol: {protocol}
  timeouts: {{connect: 500ms, total: {total}}}
  shadow: {shadow}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
{extra}"""


async def report(s: ClientSession, admin: str, limit: int = 20) -> dict[str, Any]:
    async with s.get(f"{admin}/v1/routes/iris/shadow?limit={limit}", headers=READ) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def settled(s: ClientSession, admin: str, n: int, key: str = "compared",
                  timeout: float = 20.0) -> dict[str, Any]:
    """The report once `n` copies reached `key`: "compared", "ended" (compared or failed),
    or one of the report's `copies` counts."""
    last: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal last
        last = await report(s, admin)
        got = {"compared": last["compared"], "ended": last["compared"] + last["copies"]["failed"]}
        return bool(got.get(key, last["copies"].get(key, 0)) >= n)

    await wait_until(done, timeout, 0.05, f"{n} shadow copies ({key})")
    return last


async def send_all(s: ClientSession, url: str, bodies: list[bytes],
                   concurrency: int = 8) -> list[tuple[int, bytes, dict[str, str]]]:
    sem = asyncio.Semaphore(concurrency)

    async def one(b: bytes) -> tuple[int, bytes, dict[str, str]]:
        async with sem, s.post(url, data=b, headers={"content-type": "application/json"}) as r:
            return r.status, await r.read(), dict(r.headers)

    return list(await asyncio.gather(*(one(b) for b in bodies)))


# ---------------------------------------------------------------- agreement is measured


async def test_v2_agreement_rate_is_the_truth_noise_of_1e7_passes_real_changes_do_not(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    # the shadow adds 1e-7 to every score on 70% of inputs and moves the top class on 30%
    def variant(x: int) -> str:
        return "change" if x % 10 < 3 else "noise"

    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", variant))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}"))
    n = 200
    async with running_gateway(cfg) as gw:
        answers = await send_all(session, gw.url + INFER, [v2_request(x) for x in range(n)])
        assert all(st == 200 for st, _, _ in answers)
        rep = await settled(session, gw.admin, n)
    truth = sum(variant(x) != "change" for x in range(n)) / n  # 0.7
    # deterministic backends and every request mirrored: the measure is exact
    assert rep["compared"] == n and abs(rep["agreement"] - truth) <= 0.005, rep
    assert rep["outcomes"]["disagreed"] == n - rep["agreed"]
    assert set(rep["differences"]) == {"values"}
    assert rep["copies"]["sent"] == n and rep["dropped"] == 0
    d = rep["disagreements"][0]
    assert d["differences"] == [{"kind": "values", "path": "outputs[probs].data"}]
    assert d["primary"]["status"] == 200 and d["request"]["inputs"][0]["name"] == "x"
    assert rep["latency_ms"]["primary"]["p50"] is not None


async def test_v2_argmax_and_sampling_within_tolerance(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """With `argmax`, score noise and moved scores that keep the class agree; only the
    class changes count. With sample 0.4, the share mirrored and the agreement measured
    are within a stated tolerance of the truth (binomial: 4 standard deviations)."""
    def variant(x: int) -> str:
        return "change" if x % 5 == 0 else "noise"  # truth: 80% agree

    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", variant))
    cfg = write_config(tmp_path, route(
        p1, p2, "{version: v2, sample: 0.4, compare: {v2_tensors: {atol: 0, rtol: 0, "
                "argmax: true}}}"))
    n = 400
    async with running_gateway(cfg) as gw:
        await send_all(session, gw.url + INFER, [v2_request(x) for x in range(n)])
        rep = await report(session, gw.admin)
        sent = rep["copies"]["sent"]
        rep = await settled(session, gw.admin, sent)
    share = sent / n
    assert abs(share - 0.4) <= 4 * (0.4 * 0.6 / n) ** 0.5, share  # 0.4 ± 0.098
    assert abs(rep["agreement"] - 0.8) <= 4 * (0.8 * 0.2 / sent) ** 0.5, rep
    assert set(rep["differences"]) == {"argmax"}


async def test_openai_agreement_rate_with_streams_case_and_finish_reason(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    # the shadow: same words in other case and spacing (agree: normalized), other words
    # (disagree), finish_reason "length" (disagree), else the same answer
    def variant(x: int) -> str | None:
        return ("text", "finish", "case", None, None, "case", None, None)[x % 8]

    p1 = await backends(chat_app("v1"))
    p2 = await backends(chat_app("v2", variant))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}", "openai",
                                       "/v1/chat"))
    n = 160
    bodies = [chat_request(x, stream=x % 2 == 1) for x in range(n)]  # half of them stream
    async with running_gateway(cfg) as gw:
        answers = await send_all(session, gw.url + CHAT, bodies)
        assert all(st == 200 for st, _, _ in answers)
        assert answers[1][2]["Content-Type"].startswith("text/event-stream")
        rep = await settled(session, gw.admin, n)
    truth = sum(variant(x) in ("case", None) for x in range(n)) / n  # 0.75
    assert abs(rep["agreement"] - truth) <= 0.005, rep
    assert rep["differences"] == {"text": n // 8, "finish_reason": n // 8}


async def test_the_noise_floor_cancels_a_model_that_randomises_its_answers(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """Both versions are the same nondeterministic model (every text ends with a random
    number); the shadow also ends 20% of answers with finish_reason "length". Without a
    noise floor almost nothing agrees; with it, the random text is noise and only the
    real change (finish_reason, a path the primary never disagrees with itself on)
    counts."""
    def variant(x: int) -> str | None:
        return "finish" if x % 5 == 0 else None

    n = 100
    results = {}
    for noise in ("", ", noise: {sample: 1.0}"):
        p1 = await backends(chat_app("v1", random_text=True))
        p2 = await backends(chat_app("v2", variant, random_text=True))
        cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0" + noise + "}",
                                           "openai", "/v1/chat"))
        async with running_gateway(cfg) as gw:
            await send_all(session, gw.url + CHAT, [chat_request(x) for x in range(n)])
            results[noise] = await settled(session, gw.admin, n)
    raw, floored = results[""], results[", noise: {sample: 1.0}"]
    assert raw["agreement"] <= 0.05, raw
    assert abs(floored["agreement"] - 0.8) <= 0.005, floored
    assert floored["outcomes"]["noise"] == 80 and floored["noise"]["pairs"] == n
    assert floored["noise"]["paths"] == {"choices[0].text": n}
    assert floored["differences"] == {"finish_reason": 20}


async def test_learned_noise_paths_cover_requests_without_their_own_noise_pair(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """With noise.sample 0.3 most requests get no second primary answer; a path that was
    noise in enough pairs (threshold, min_pairs) is noise for them too."""
    p1 = await backends(chat_app("v1", random_text=True))
    p2 = await backends(chat_app("v2", random_text=True))
    cfg = write_config(tmp_path, route(
        p1, p2, "{version: v2, sample: 1.0, noise: {sample: 0.3, min_pairs: 5}}",
        "openai", "/v1/chat"))
    async with running_gateway(cfg) as gw:
        # a first round learns the noise; the second is judged with what was learned
        await send_all(session, gw.url + CHAT, [chat_request(x) for x in range(60)])
        first = await settled(session, gw.admin, 60)
        assert first["noise"]["pairs"] >= 5, first
        await send_all(session, gw.url + CHAT, [chat_request(x) for x in range(60, 160)])
        rep = await settled(session, gw.admin, 160)
    late = rep["agreed"] - first["agreed"]
    assert late == 100, rep  # every answer after the noise was learned agreed (as noise)


# ---------------------------------------------------------------- the client is untouched


async def test_the_client_never_sees_a_shadow_answer_status_or_header(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    seen1, seen2 = Recorder(), Recorder()
    p1 = await backends(echo_app("v1", seen1, extra_headers={"x-from": "primary"}))
    p2 = await backends(echo_app("v2", seen2, status=500,
                                 extra_headers={"x-from": "shadow", "x-shadow-only": "1"}))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}", "http"))
    async with running_gateway(cfg) as gw:
        for i in range(20):
            hdrs = {"x-killgate-shadow": "1", "x-user": str(i)}  # a client cannot fake it
            async with session.post(gw.url + INFER, data=b'{"q": %d}' % i,
                                    headers=hdrs) as r:
                body = await r.json()
                assert r.status == 200 and body["version"] == "v1"
                assert r.headers["x-from"] == "primary" and "x-shadow-only" not in r.headers
                assert r.headers["x-killgate-version"] == "v1"
                assert "x-killgate-shadow" not in r.headers
        rep = await settled(session, gw.admin, 20)
    assert rep["differences"] == {"status": 20} and rep["agreement"] == 0.0
    assert len(seen2.requests) == 20
    for got in seen2.requests:
        assert ("x-killgate-shadow", "1") in got["headers"]
    for got in seen1.requests:  # the primary never gets the mark (the client's is dropped)
        assert not any(k == "x-killgate-shadow" for k, _ in got["headers"])
    assert {r["body"] for r in seen1.requests} == {r["body"] for r in seen2.requests}


@pytest.mark.parametrize("kind", ["hang", "error", "reset", "refused"])
async def test_a_shadow_that_hangs_errors_or_resets_changes_no_client_answer(
        tmp_path: Path, backends: Start, session: ClientSession, kind: str) -> None:
    p1 = await backends(v2_app("v1"))
    raw: RawBackend | None = None
    if kind == "hang":
        p2 = await backends(hang_app())
    elif kind == "error":
        p2 = await backends(v2_app("v2", status=503, headers={"x-bad": "1"}))
    elif kind == "reset":
        raw = RawBackend(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"outp")
        await raw.start()
        p2 = raw.port
    else:
        from tests.conftest import free_port
        p2 = free_port()
    # a primary that waited on a hung copy would take 2 s per request (4 rounds of 8). The
    # other shadows answer (or fail) at once: a tight deadline would only time out copies
    # on a loaded machine (this process runs client, gateway and backends on one loop)
    total = "2s" if kind == "hang" else "5s"
    cfg = write_config(tmp_path, route(
        p1, p2, f"{{version: v2, sample: 1.0, timeouts: {{connect: 2s, total: {total}}}}}"))
    baseline_cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 0.0}"),
                                name="baseline.yaml")
    bodies = [v2_request(x) for x in range(30)]
    try:
        async with running_gateway(baseline_cfg) as gw:
            expected = await send_all(session, gw.url + INFER, bodies)
        async with running_gateway(cfg) as gw:
            started = time.monotonic()
            got = await send_all(session, gw.url + INFER, bodies)
            took = time.monotonic() - started
            rep = await settled(session, gw.admin, 30, key="ended")  # compared or failed
    finally:
        if raw is not None:
            await raw.stop()
    strip = {"Date", "Content-Length"}
    assert [(s, b, {k: v for k, v in h.items() if k not in strip}) for s, b, h in got] == \
        [(s, b, {k: v for k, v in h.items() if k not in strip}) for s, b, h in expected]
    assert took < 4.0, took  # never held by the shadow (8 s if they had waited on it)
    if kind == "error":
        assert rep["compared"] == 30, (rep["copies"], rep["failures"])
        assert rep["differences"] == {"status": 30}
    else:
        assert rep["copies"]["failed"] == 30 and rep["compared"] == 0
        want = {"hang": "timeout", "reset": "reset", "refused": "connect"}[kind]
        assert any(want in k for k in rep["failures"]), rep["failures"]


async def test_at_max_inflight_copies_are_dropped_not_queued(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    hung = Recorder()

    async def hold(req: web.Request) -> web.StreamResponse:
        hung.add(req, await req.read())
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hold)
    p1 = await backends(v2_app("v1"))
    p2 = await backends(app)
    cfg = write_config(tmp_path, route(
        p1, p2, "{version: v2, sample: 1.0, max_inflight: 3, timeouts: {total: 1s}}"))
    async with running_gateway(cfg) as gw:
        started = time.monotonic()
        for x in range(12):  # one at a time: each answer is back before the next is sent
            async with session.post(gw.url + INFER, data=v2_request(x)) as r:
                assert r.status == 200
        assert time.monotonic() - started < 2.0
        rep = await report(session, gw.admin)
        assert rep["copies"]["sent"] == 3 and rep["dropped"] == 9
        await wait_until(lambda: len(hung.requests) == 3, 5, what="3 copies at the shadow")
        await settled(session, gw.admin, 3, key="failed")  # the 3 copies time out
        # ... and nothing was waiting to follow them: the dropped ones are gone
        async with session.post(gw.url + INFER, data=v2_request(99)) as r:
            assert r.status == 200
        await wait_until(lambda: len(hung.requests) == 4, 5, what="the next copy")
        assert len(hung.requests) == 4


async def test_a_killed_or_unhealthy_shadow_receives_nothing(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    seen = Recorder()
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", recorder=seen))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}"))
    async with running_gateway(cfg) as gw:
        async with session.post(gw.admin + "/v1/kill", headers=KILL, json={
                "scope": "version", "route": "iris", "version": "v2",
                "reason": "shadow misbehaves"}) as r:
            assert r.status == 200, await r.text()
        await send_all(session, gw.url + INFER, [v2_request(x) for x in range(10)])
        rep = await report(session, gw.admin)
        assert rep["copies"]["down"] == 10 and rep["copies"]["sent"] == 0
    assert seen.requests == []


async def test_bodies_above_the_bound_are_not_mirrored(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    seen = Recorder()
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2", seen))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, "
                                               "max_request_bytes: 1024}", "http"))
    async with running_gateway(cfg) as gw:
        for size in (1000, 2000, 200_000):
            async with session.post(gw.url + INFER, data=b"x" * size) as r:
                assert r.status == 200
                assert (await r.json())["body"] == "x" * size
        rep = await settled(session, gw.admin, 1)
        assert rep["copies"]["body"] == 2 and rep["copies"]["sent"] == 1
    assert [len(r["body"]) for r in seen.requests] == [1000]


async def test_streamed_answers_are_assembled_up_to_their_bound(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    p1 = await backends(chat_app("v1"))
    p2 = await backends(chat_app("v2"))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, "
                                               "max_answer_bytes: 2048}", "openai", "/v1/chat"))
    async with running_gateway(cfg) as gw:
        async with session.post(gw.url + CHAT, data=chat_request(1, stream=True)) as r:
            text = await r.text()
            assert r.status == 200 and "[DONE]" in text
        rep = await settled(session, gw.admin, 1)
        assert rep["agreement"] == 1.0
        # an answer larger than the bound is not compared (and no copy is sent)
        big = json.dumps({"model": "m", "stream": True, "messages": [
            {"role": "user", "content": "q" + "1" * 2500}]}).encode()
        async with session.post(gw.url + CHAT, data=big) as r:
            assert r.status == 200
            await r.read()
        rep = await report(session, gw.admin)
        assert rep["copies"]["answer"] == 1 and rep["copies"]["sent"] == 1


async def test_shadow_series_on_metrics(tmp_path: Path, backends: Start,
                                        session: ClientSession) -> None:
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "change" if x < 2 else None))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}"))
    async with running_gateway(cfg) as gw:
        await send_all(session, gw.url + INFER, [v2_request(x) for x in range(8)])
        await settled(session, gw.admin, 8)
        async with session.get(gw.admin + "/metrics") as r:
            text = await r.text()
    assert 'killgate_shadow_comparisons_total{outcome="agreed",route="iris",version="v2"} 6.0' \
        in text
    assert 'killgate_shadow_agreement_ratio{route="iris",version="v2"} 0.75' in text
    assert 'killgate_shadow_copies_total{result="sent",route="iris",version="v2"} 8.0' in text
    assert 'killgate_shadow_duration_seconds_count{route="iris",side="shadow",version="v2"} 8.0' \
        in text


async def test_streams_being_assembled_hold_slots_and_a_failed_one_gives_its_back(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """A sampled stream holds one of the max_inflight slots while its answer is assembled
    (memory stays bounded); a stream that fails, or is cut, frees it without a copy."""
    from tests.backends import sse_app

    p1 = await backends(sse_app("v1"))
    p2 = await backends(sse_app("v2"))
    # (a tap lost in a reference cycle gives its slot back by the route's total timeout)
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, max_inflight: 2}",
                                       "http", "/v2/models/iris", total="2s"))
    async with running_gateway(cfg) as gw:
        mirror = gw.gw.mirror

        async def stream(q: str) -> bytes:
            async with session.get(gw.url + "/v2/models/iris/sse?" + q) as r:
                try:
                    return await r.read()
                except Exception:  # noqa: BLE001 - the cut stream's client error
                    return b""

        four = [asyncio.create_task(stream("n=3&interval=0.2")) for _ in range(4)]
        await asyncio.gather(*four)
        rep = await settled(session, gw.admin, 2, key="sent")
        assert rep["copies"]["sent"] == 2 and rep["dropped"] == 2, rep
        await wait_until(lambda: mirror.inflight["iris"] == 0, 10, what="slots back")
        await stream("n=5&interval=0.05&die_after=2")  # the primary dies mid-stream
        await wait_until(lambda: mirror.inflight["iris"] == 0, 10, what="the failed slot back")
        rep = await report(session, gw.admin)
        assert rep["copies"]["sent"] == 2  # no copy of a failed answer
        await stream("n=2&interval=0.01")
        rep = await settled(session, gw.admin, 3, key="sent")
        assert rep["dropped"] == 2


async def test_large_answers_are_compared_too(tmp_path: Path, backends: Start,
                                              session: ClientSession) -> None:
    """Answers past 1 KiB are compared in a worker thread (the loop keeps serving); the
    verdict is the same, and the stored record is cut to max_body."""
    def app(shift: float) -> web.Application:
        async def infer(req: web.Request) -> web.Response:
            await req.read()
            data = [i / 7 + shift for i in range(20_000)]
            return web.json_response({"outputs": [{"name": "emb", "shape": [20_000],
                                                   "datatype": "FP32", "data": data}]})

        a = web.Application()
        a.router.add_route("*", "/{tail:.*}", infer)
        return a

    p1 = await backends(app(0.0))
    p2 = await backends(app(0.5))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, "
                                               "disagreements: {max_body: 1000}}"))
    async with running_gateway(cfg) as gw:
        for x in range(3):
            async with session.post(gw.url + INFER, data=v2_request(x)) as r:
                assert r.status == 200 and len(await r.read()) > 64 * 1024
        rep = await settled(session, gw.admin, 3)
    assert rep["agreement"] == 0.0 and rep["differences"] == {"values": 3}
    body = rep["disagreements"][0]["shadow"]["body"]
    assert isinstance(body, str) and body.endswith("bytes]") and "…[cut " in body


async def test_a_reload_turns_mirroring_on_and_new_compare_settings_count_afresh(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "noise"))
    seen = Recorder()
    p3 = await backends(v2_app("v2", recorder=seen))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 0.0}"))

    async def reload(text: str) -> None:
        old = gw.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, text, name="next.yaml").read_text())
        gw.gw.request_reload()
        await wait_until(lambda: gw.gw.loaded.digest != old, 10, what="the reload")

    async with running_gateway(cfg) as gw:
        await send_all(session, gw.url + INFER, [v2_request(x) for x in range(5)])
        assert (await report(session, gw.admin))["copies"]["sent"] == 0
        await reload(route(p1, p2, "{version: v2, sample: 1.0}"))
        await send_all(session, gw.url + INFER, [v2_request(x) for x in range(5)])
        rep = await settled(session, gw.admin, 5)
        assert rep["agreement"] == 1.0
        # other comparison settings: the old counts no longer apply
        await reload(route(p1, p2, "{version: v2, sample: 1.0, compare: {v2_tensors: "
                                   "{atol: 0, rtol: 0}}}"))
        assert (await report(session, gw.admin))["compared"] == 0
        await send_all(session, gw.url + INFER, [v2_request(x) for x in range(4)])
        rep = await settled(session, gw.admin, 4)
        assert rep["agreement"] == 0.0  # 1e-7 is a difference with no tolerance
        # the shadow moves to another backend: the copies follow the new table
        pools = gw.gw.mirror.upstreams.pools
        old_pool = pools[("http", "127.0.0.1", p2)]
        assert old_pool.idle  # (a kept-alive connection to the shadow's old deployment)
        await reload(route(p1, p3, "{version: v2, sample: 1.0}"))
        await send_all(session, gw.url + INFER, [v2_request(x) for x in range(3)])
        await wait_until(lambda: len(seen.requests) == 3, 10, what="copies at the new url")
        # the copies' pool to the old url is retired, as the data plane's are: its idle
        # connections closed, not kept to a deployment nothing sends to (a pool and its
        # sockets more with every redeploy of the shadow)
        assert ("http", "127.0.0.1", p2) not in pools
        await wait_until(lambda: old_pool.open == 0, 5, what="the old pool's connections closed")


async def test_a_path_the_primary_is_sometimes_unsure_of_still_catches_a_real_change(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """The primary randomises its text on 20% of inputs; the shadow's text is different on
    every input. The text path is noise in 20% of the pairs but differs in ~100% of the
    comparisons: not noise for requests without a pair of their own (Diffy's relative
    rule), so the change is seen."""
    p1 = await backends(chat_app("v1", lambda x: "random" if x % 5 == 0 else None))
    p2 = await backends(chat_app("v2", lambda x: "text"))
    cfg = write_config(tmp_path, route(
        p1, p2, "{version: v2, sample: 1.0, noise: {sample: 0.3, min_pairs: 5}}",
        "openai", "/v1/chat"))
    n = 100
    async with running_gateway(cfg) as gw:
        await send_all(session, gw.url + CHAT, [chat_request(x) for x in range(n)])
        rep = await settled(session, gw.admin, n)
    assert rep["agreement"] <= 0.2, rep  # only inputs whose own pair disagreed on the text
    assert rep["differences"]["text"] >= 80
    assert rep["noise"]["paths"].get("choices[0].text", 0) >= 1
