"""A JSON path written the JSONPath way, `$.id`, was accepted by the config and matched
nothing: `$` was read as a key named "$". So a field `compare.json.ignore` named (an id, a
timestamp: what differs between any two calls, to the same primary too) still counted
every answer as a disagreement, and a field `disagreements.redact` named was kept in the
records in clear (found by review of the shadow comparison's ignored fields). A leading
`$` is the root: `$.id` is `id`; `$` alone (or `$.`) is refused, naming the grammar."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.config_jsonpaths import parse_path
from gateway.config_shadow import CompareConfig, DisagreementsConfig
from gateway.configfile import parse_config_text
from gateway.domain.compare import AGREED, compare, judge
from gateway.domain.comparison import REDACTED, Answer
from gateway.domain.verdict import body_record
from gateway.errors import ConfigError
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_config_shadow import ROUTE
from tests.test_shadow import report, route

pytestmark = pytest.mark.timeout(30)


def _answer(doc: object) -> Answer:
    return Answer(200, json.dumps(doc).encode(), "application/json", None)


def test_a_root_path_names_the_same_field() -> None:
    assert parse_path("$.data[*].created") == parse_path("data[*].created")
    assert parse_path("$[0].id") == parse_path("[0].id")
    assert parse_path("$ref.x") == (("key", "$ref"), ("key", "x"))  # (a key that starts so)
    cfg = CompareConfig.model_validate({"json": {"ignore": ["$.id", "$.data[*].created"]}})
    c = compare(cfg, b"{}", _answer({"id": "a", "data": [{"created": 1, "v": 2}]}),
                _answer({"id": "b", "data": [{"created": 9, "v": 2}]}))
    assert judge(c) == (AGREED, ())
    kept = body_record(b'{"inputs": [{"data": [1, 2]}], "n": 1}',
                       DisagreementsConfig(redact=["$.inputs[*].data"]))
    assert kept == {"inputs": [{"data": REDACTED}], "n": 1}


@pytest.mark.parametrize("path", ["$", "$.", "$..id"])
def test_a_path_naming_the_whole_answer_or_recursion_is_refused(path: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config_text(ROUTE.format(
            shadow=f"{{version: v2, compare: {{json: {{ignore: ['{path}']}}}}}}",
            protocol="http"))
    assert "routes[0].shadow.compare.json.ignore" in str(e.value), str(e.value)


def _stamped(name: str) -> web.Application:
    """Answers the same result with an id and a time of its own each call (any service)."""
    n = itertools.count()

    async def handler(req: web.Request) -> web.Response:
        await req.read()
        return web.json_response({"id": f"{name}-{next(n)}", "created": next(n),
                                  "result": {"label": "cat"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_fields_ignored_by_a_root_path_never_disagree_end_to_end(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(_stamped("v1")), await backends(_stamped("v2"))
    sh = "{version: v2, sample: 1.0, compare: {json: {ignore: [$.id, $.created]}}}"
    cfg = write_config(tmp_path, route(p1, p2, sh, "http", "/api"))
    async with running_gateway(cfg) as g:
        for _ in range(4):
            async with session.get(g.url + "/api/x") as r:
                assert r.status == 200
                await r.read()

        async def compared() -> bool:
            return bool((await report(session, g.admin))["compared"] >= 4)

        await wait_until(compared, 10, 0.05, "four copies compared")
        rep = await report(session, g.admin)
    assert rep["agreement"] == 1.0 and rep["outcomes"]["disagreed"] == 0, rep
