"""Shadow comparison of answers with a Content-Encoding: a client that sends
`Accept-Encoding: gzip` gets (and the tap collects) the backend's compressed bytes, and the
copy, carrying the same field, gets compressed bytes too. The comparison must judge what
the bytes say, not how they were compressed."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import ClientSession, web

from tests.conftest import running_gateway, wait_until, write_config
from tests.shadow_backends import classify, v2_request
from tests.test_shadow import INFER, report, route

Start = Callable[[web.Application], Awaitable[int]]


def gzip_v2_app(name: str, coding: str = "gzip", change: bool = False) -> web.Application:
    """A V2 classifier that compresses its answers when the client accepts it (as a model
    server behind a compressing middleware does); `change`: another class on top."""

    async def infer(req: web.Request) -> web.Response:
        x = int(json.loads(await req.read())["inputs"][0]["data"][0])
        scores = classify(x)
        if change:
            scores = scores[1:] + scores[:1]
        body = json.dumps({"model_name": "iris", "model_version": name, "id": f"{name}-{x}",
                           "outputs": [{"name": "probs", "shape": [1, 3], "datatype": "FP32",
                                        "data": scores}]}).encode()
        headers = {"content-type": "application/json"}
        if coding in req.headers.get("accept-encoding", ""):
            body = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
            headers["content-encoding"] = coding
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


async def _run(tmp_path: Path, backends: Start, session: ClientSession, coding: str,
               change: bool, compare: str = "v2_tensors") -> dict[str, object]:
    p1 = await backends(gzip_v2_app("v1", coding))
    p2 = await backends(gzip_v2_app("v2", coding, change))
    cfg = write_config(tmp_path, route(p1, p2, f"{{version: v2, sample: 1.0, compare: "
                                               f"{compare}}}"))
    n = 10
    async with running_gateway(cfg) as gw:
        for x in range(n):
            async with session.post(gw.url + INFER, data=v2_request(x),
                                    headers={"content-type": "application/json",
                                             "accept-encoding": coding}) as r:
                assert r.status == 200
                assert r.headers.get("content-encoding") == coding  # passed through
                assert json.loads(await r.read())["outputs"][0]["name"] == "probs"
        last: dict[str, object] = {}

        async def judged() -> bool:  # every copy compared, uncomparable or failed
            nonlocal last
            last = await report(session, gw.admin)
            done = sum(last["outcomes"].values()) + last["copies"]["failed"]  # type: ignore[attr-defined,index]
            return bool(done >= n)

        await wait_until(judged, 20, 0.05, f"{n} copies judged")
    return last


async def test_gzip_answers_that_agree_are_compared_and_agree(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    rep = await _run(tmp_path, backends, session, "gzip", change=False)
    assert rep["compared"] == 10 and rep["agreed"] == 10, rep
    assert rep["outcomes"]["uncomparable"] == 0, rep  # type: ignore[index]


async def test_deflate_answers_that_differ_disagree_with_readable_records(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    rep = await _run(tmp_path, backends, session, "deflate", change=True,
                     compare="{json: {ignore: [id, model_version]}}")
    assert rep["compared"] == 10 and rep["agreed"] == 0, rep
    assert set(rep["differences"]) == {"value"}, rep  # type: ignore[arg-type]
    d = rep["disagreements"][0]  # type: ignore[index]
    # the record holds the JSON, not compressed bytes read as text
    assert d["primary"]["body"]["outputs"][0]["name"] == "probs", d
    assert d["shadow"]["body"]["model_version"] == "v2", d


def test_decoding_is_bounded_and_strict() -> None:
    from gateway.config_shadow import ShadowConfig
    from gateway.domain.comparison import Answer, decoded
    from gateway.domain.verdict import verdict

    bomb = Answer(200, gzip.compress(b"0" * 50_000_000), "application/json", "gzip")
    assert len(bomb.body) < 100_000 and decoded(bomb, 1 << 20) is None  # never inflated
    cut = Answer(200, gzip.compress(b'{"a": 1}')[:-4], "application/json", "gzip")
    assert decoded(cut, 1 << 20) is None
    raw = Answer(200, zlib.compress(b'{"a": 1}')[2:-4], "application/json", "deflate")
    assert decoded(raw, 1 << 20) == Answer(200, b'{"a": 1}', "application/json")
    br = Answer(200, b"\x0b\x02\x80", "", "br")
    assert decoded(br, 1 << 20) is br  # not decoded here: compared as bytes
    sh = ShadowConfig.model_validate({"version": "v2", "sample": 1.0, "compare": "json"})
    good = Answer(200, gzip.compress(b'{"a": 1}'), "application/json", "gzip")
    v = verdict(sh, "http", b"{}", good, cut, None, frozenset())
    assert v.outcome == "disagreed" and [d.kind for d in v.left] == ["unparsable"]
    v = verdict(sh, "http", b"{}", cut, good, None, frozenset())
    assert v.outcome == "uncomparable"
    v = verdict(sh, "http", b"{}", good, Answer(200, b'{"a":1.0}', "application/json"), None,
                frozenset())
    assert v.outcome == "agreed"  # one side compressed, the other not: the same answer
