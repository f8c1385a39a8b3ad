"""A kept disagreement holds the client's request body as JSON (redacted, cut at
max_body). Any client chooses that body: one nested just below the parser's limit was kept
as a JSON document, and every later encoding of the records (each a few levels deeper: the
blob published to the store, the admin API's answer) hit Python's recursion limit. The
shadow results loop died (it only expected StateError), so this instance's counts were
never published again, and GET /v1/routes/{route}/shadow answered 500."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.config_shadow import DisagreementsConfig
from gateway.domain.verdict import MAX_DEPTH, body_record
from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_shadow import READ

pytestmark = pytest.mark.timeout(60)


def _routes(p1: int, p2: int) -> str:
    return f"""\
- name: echo
  match: {{path_prefix: /echo}}
  stable: v1
  shadow: {{version: v2, sample: 1.0}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
"""


def deep(n: int, size: int = 0) -> bytes:
    body = b"[" * n + b"1" + b"]" * n
    return body + b" " * max(0, size - len(body))


async def test_a_deeply_nested_request_breaks_neither_publishing_nor_the_report(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, _routes(p1, p2))) as g:
        results = g.gw.shadow
        # (padded past 64 KiB with whitespace: compared in the worker thread, whose stack is
        # shallow, so the deepest document the parser takes is kept)
        for n in (900, 960, 980, 990, 995):
            async with session.post(g.url + "/echo", data=deep(n, 65000),
                                    headers={"content-type": "application/json"}) as r:
                assert r.status == 200
                await r.read()
        rep: dict = {}

        async def judged() -> bool:
            nonlocal rep
            async with session.get(f"{g.admin}/v1/routes/echo/shadow", headers=READ) as r:
                assert r.status == 200, await r.text()
                rep = await r.json()
            return bool(sum(rep["outcomes"].values()) >= 5)

        await wait_until(judged, 20, 0.05, "5 copies judged")
        assert rep["outcomes"]["disagreed"] == 5, rep  # the echo backends name themselves
        await asyncio.sleep(results.interval * 2.5)  # (the loop published since)
        assert results._task is not None and not results._task.done(), results._task


def test_records_keep_deep_json_as_text_or_not_at_all() -> None:
    body = deep(200)  # (well within the parser's limit, beyond MAX_DEPTH)
    kept = body_record(body, DisagreementsConfig())
    assert isinstance(kept, str) and kept.startswith("[[[")
    gone = body_record(body, DisagreementsConfig(redact=["x"]))
    assert isinstance(gone, str) and "not kept" in gone
    ok = deep(MAX_DEPTH - 1)
    assert body_record(ok, DisagreementsConfig()) == json.loads(ok)
    wide = json.dumps({"inputs": [{"data": [[[[1, 2]]]] * 500}]}).encode()
    assert body_record(wide, DisagreementsConfig(max_body=1 << 20)) == json.loads(wide)
