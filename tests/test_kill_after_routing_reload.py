"""A request routed before a kill, its body still arriving, then a reload that removes what
was killed (an operator's clean-up after the incident): the kills in force still hold, and
it never reaches what was killed (second and third hostile reviews: the first fix read the
kills from the new plan). And a version kill that leaves the route no version gives a
request routed before it the route's fallback, as routing after it does."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_kill_after_routing import CHUNKED_REST, chunked_start, in_two_parts, kill_in_flight

pytestmark = pytest.mark.timeout(30)


def _route(name: str, versions: dict[str, tuple[int, int]], extra: str = "") -> str:
    """A route `name` with `versions` (name: (port, weight)); `extra`: route keys."""
    lines = "".join(f'    - {{name: {v}, url: "http://127.0.0.1:{p}", weight: {w}}}\n'
                    for v, (p, w) in versions.items())
    return textwrap.dedent(f"""\
        - name: {name}
          match: {{path_prefix: /v2/models/{name}}}
          stable: {next(iter(versions))}
        """) + extra + "  versions:\n" + lines


@pytest.mark.parametrize("what", ["global", "route", "version"])
async def test_a_request_routed_before_a_kill_is_not_sent_after_a_reload_removes_it(
        tmp_path: Path, backends, what: str) -> None:
    """A global or route kill, then the route removed; a version kill, then the version
    removed from a route that stays."""
    killed = Recorder()
    p_bad, p_ok = await backends(echo_app("bad", killed)), await backends(echo_app("ok"))
    if what == "version":
        before = _route("iris", {"v1": (p_ok, 0), "v2": (p_bad, 100)})  # routed to v2
        after = _route("iris", {"v1": (p_ok, 100)})
        path, target = b"/v2/models/iris/infer", {"route": "iris", "version": "v2"}
    else:
        before = _route("bad", {"v1": (p_bad, 100)}) + _route("other", {"v1": (p_ok, 100)})
        after = _route("other", {"v1": (p_ok, 100)})
        path, target = b"/v2/models/bad/infer", {} if what == "global" else {"route": "bad"}
    cfg = write_config(tmp_path, before)
    async with running_gateway(cfg) as g, ClientSession() as session:
        async def between() -> None:
            await kill_in_flight(g, session, scope=what, abort_inflight=False, **target)
            old = g.gw.loaded.digest
            cfg.write_text(write_config(tmp_path, after, name="next.yaml").read_text())
            g.gw.request_reload()
            await wait_until(lambda: g.gw.loaded.digest != old, 10)

        answer = await in_two_parts(g.url, chunked_start(path), between, CHUNKED_REST)
    status_line = answer.split(b"\r\n", 1)[0]
    assert not killed.requests, (
        f"the {what} kill's receipt was in hand, then a reload removed what it killed, and "
        f"the request routed before it reached the killed backend: {status_line!r}")


async def test_a_request_routed_before_the_last_version_is_killed_gets_the_fallback(
        tmp_path: Path, backends) -> None:
    rec = Recorder()
    port = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, _route(
        "iris", {"v1": (port, 100)}, "  fallback: {status: 200, json: {answer: cached}}\n"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        answer = await in_two_parts(
            g.url, chunked_start(b"/v2/models/iris/infer"),
            lambda: kill_in_flight(g, session, scope="version", route="iris", version="v1"),
            CHUNKED_REST)
        async with session.post(g.url + "/v2/models/iris/infer", data=b'{"a":1}') as after:
            after_status, after_body = after.status, await after.json()
    assert not rec.requests
    assert (after_status, after_body) == (200, {"answer": "cached"})  # routed after the kill
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    assert b" 200 " in status_line and json.loads(body) == {"answer": "cached"}, (
        f"routed before the kill: {status_line.decode()} {body.decode()}, where a request "
        f"routed after it gets the fallback")
