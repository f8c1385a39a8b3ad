"""A request waiting for one of its version's connections (never sent) when that version or
its route is killed, with or without `abort_inflight`: it never reaches what was killed.
With another version it fails over (README: a killed version's share moves to the others),
whether a connection then comes or the wait ends in an error (the queue's timeout); with no
other version it is answered 503 killed, not 503 overloaded, and the error is not counted
against the killed version. (From the third, fourth and fifth hostile reviews: it got
503 killed, then 503 overloaded.)"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app, hang_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)


def _routes(hung: int, v2: int | None, holder_shares_the_pool: bool) -> str:
    """Route iris: v1 on the hanging backend (one connection: `max_connections_per_backend`),
    and v2 when given. The request that holds v1's connection comes from route iris itself,
    or from route `other` on the same backend (then iris's request waits until the queue's
    timeout, 1 s: the connection never comes free)."""
    weights = ', weight: 100' if v2 is not None else ""
    out = textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          timeouts: {{connect: {"1s" if holder_shares_the_pool else "2s"}, total: 10s}}
          versions:
            - {{name: v1, url: "http://127.0.0.1:{hung}"{weights}}}
        """)
    if v2 is not None:
        out += f'    - {{name: v2, url: "http://127.0.0.1:{v2}", weight: 0}}\n'
    if holder_shares_the_pool:
        out += textwrap.dedent(f"""\
            - name: other
              match: {{path_prefix: /other}}
              stable: a
              versions:
                - {{name: a, url: "http://127.0.0.1:{hung}"}}
            """)
    return out


async def _queued_across_a_kill(tmp_path: Path, routes: str,
                                holder_path: str, **kill_body: Any) -> tuple[int, str, str, int]:
    """(status, x-killgate-version, body) of a request to iris queued behind a hanging one
    when `kill_body` is applied, and `killgate_inflight_aborted_total` for iris then."""
    cfg = write_config(tmp_path, routes, extra="server: {max_connections_per_backend: 1}\n")
    async with running_gateway(cfg) as g, ClientSession() as session:
        holder = asyncio.create_task(session.get(g.url + holder_path))  # hangs, holds v1
        await wait_until(lambda: g.gw.inflight.count == 1)
        waiter = asyncio.create_task(session.get(g.url + "/v2/models/iris/infer"))
        await wait_until(lambda: g.gw.inflight.count == 2)  # queued for v1, never sent
        await kill(session, g.admin, **kill_body)
        resp = await asyncio.wait_for(waiter, 10)
        got = resp.status, resp.headers.get("x-killgate-version", ""), await resp.text()
        resp.release()
        cut = g.gw.metrics.get("killgate_inflight_aborted_total", ("iris",))
        holder.cancel()
        with contextlib.suppress(BaseException):
            await holder
    return (*got, int(cut))


@pytest.mark.parametrize("abort_inflight", [False, True])
@pytest.mark.parametrize("wait_ends", ["connection", "queue_timeout"])
async def test_a_request_queued_for_a_version_killed_meanwhile_fails_over(
        tmp_path: Path, backends, abort_inflight: bool, wait_ends: str) -> None:
    r2 = Recorder()
    hung, p2 = await backends(hang_app()), await backends(echo_app("v2", r2))
    shared = wait_ends == "queue_timeout"
    status, version, body, cut = await _queued_across_a_kill(
        tmp_path, _routes(hung, p2, shared), "/other/x" if shared else "/v2/models/iris/x",
        scope="version", route="iris", version="v1", abort_inflight=abort_inflight)
    assert (status, version) == (200, "v2"), (
        f"queued for v1 (never sent) when v1 was killed (abort_inflight={abort_inflight}, "
        f"the wait ends by {wait_ends}): {status} from {version}: {body[:200]}")
    # the request moved on is not one cut: only iris's hanging holder is, when it is iris's
    # and the kill cuts what is in flight
    assert cut == (1 if abort_inflight and not shared else 0), cut


@pytest.mark.parametrize("scope, abort_inflight", [
    ("route", True), ("version", True), ("version", False)])
async def test_a_request_queued_on_a_one_version_route_killed_meanwhile_is_answered_killed(
        tmp_path: Path, backends, scope: str, abort_inflight: bool) -> None:
    hung = await backends(hang_app())
    target = {"route": "iris"} | ({"version": "v1"} if scope == "version" else {})
    status, _, body, cut = await _queued_across_a_kill(
        tmp_path, _routes(hung, None, True), "/other/x",
        scope=scope, abort_inflight=abort_inflight, **target)
    assert status == 503 and "killed" in body and "overloaded" not in body, (
        f"queued for v1 (never sent), {scope} kill (abort_inflight={abort_inflight}), then "
        f"its queue wait timed out, no other version: {status} {body[:300]}")
    assert cut == 1, cut  # the request answered killed
