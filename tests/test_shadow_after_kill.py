"""Shadow copies after a kill that covers where they go, made while the primary answered:
no copy reaches what was killed (README, the kill switch), whether the kill is of the
route, global, or of the shadow version, whether a reload then removes the route, and for
the noise copy to the primary's own version. (From the second and third hostile reviews:
the first check looked at the shadow target alone, and at the plan, not the kills in force.)
The version kill without a reload is in test_kill_after_routing.py."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import RawServer, Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.shadow_backends import chat_app, chat_request
from tests.test_killswitch import kill
from tests.test_shadow import route, settled

pytestmark = pytest.mark.timeout(30)

OTHER = """\
- name: other
  match: {{path_prefix: /v2/models/other}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
"""


async def _copies_after_kill(tmp_path: Path, backends: Any, watched: str, shadow: str,
                             kill_body: dict[str, Any], reload: bool = False) -> tuple[int, int]:
    """A chat request answered slowly by v1 (its shadow v2); `kill_body` applied while v1
    answers (and, with `reload`, a reload that removes the route). (requests version
    `watched` had when the kill's receipt came, requests it had once all settled)."""
    rec = Recorder()
    p1 = await backends(chat_app("v1", delay=1.0, **({"recorder": rec} if watched == "v1"
                                                    else {})))
    p2 = await backends(chat_app("v2", **({"recorder": rec} if watched == "v2" else {})))
    p3 = await backends(echo_app("other"))
    other = OTHER.format(port=p3)
    cfg = write_config(tmp_path, route(p1, p2, shadow, protocol="openai", prefix="/v1") + other)
    async with running_gateway(cfg) as g, ClientSession() as session:
        call = asyncio.create_task(session.post(g.url + "/v1/chat/completions",
                                                data=chat_request(1),
                                                headers={"content-type": "application/json"}))
        await wait_until(lambda: g.gw.inflight.count == 1 and (watched != "v1"
                                                               or len(rec.requests) == 1))
        await kill(session, g.admin, abort_inflight=False, **kill_body)
        killed_at = len(rec.requests)
        if reload:
            old = g.gw.loaded.digest
            cfg.write_text(write_config(tmp_path, other, name="next.yaml").read_text())
            g.gw.request_reload()
            await wait_until(lambda: g.gw.loaded.digest != old, 10)
        resp = await asyncio.wait_for(call, 10)
        assert resp.status == 200 and resp.headers["x-killgate-version"] == "v1"
        resp.release()
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: len(rec.requests) > killed_at, timeout=2)
    return killed_at, len(rec.requests)


COPY = "{version: v2, sample: 1.0, compare: openai_chat}"


@pytest.mark.parametrize("scope, reload", [
    ("route", False), ("global", False), ("route", True), ("version", True)])
async def test_a_shadow_copy_is_not_sent_after_a_kill_made_while_the_primary_answered(
        tmp_path: Path, backends, scope: str, reload: bool) -> None:
    body: dict[str, Any] = {"scope": scope}
    if scope != "global":
        body["route"] = "iris"
    if scope == "version":
        body["version"] = "v2"
    at_kill, after = await _copies_after_kill(tmp_path, backends, "v2", COPY, body, reload)
    assert after == at_kill, (
        f"a {scope} kill covering the shadow v2 was in force (receipt)"
        f"{', a reload removed the route' if reload else ''}, and the copy still reached v2")


async def test_a_noise_copy_is_not_sent_to_the_primary_version_killed_while_it_answered(
        tmp_path: Path, backends) -> None:
    noise = COPY[:-1] + ", noise: {sample: 1.0}}"
    at_kill, after = await _copies_after_kill(
        tmp_path, backends, "v1", noise, {"scope": "version", "route": "iris", "version": "v1"})
    assert after == at_kill, ("v1 was killed (receipt in hand) while it answered; the "
                              "shadow's noise copy then sent the request to v1 again")


class _HeldShadow(RawServer):
    """A shadow that reads a copy and never answers (a long generation): `got` once a copy
    is in, `gone` once the gateway closed that connection."""

    def __init__(self) -> None:
        super().__init__()
        self.got = asyncio.Event()
        self.gone = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.got.set()
        await reader.read()  # until the gateway closes its side
        self.gone.set()


@pytest.mark.parametrize("scope", ["version", "route"])
async def test_a_kill_cuts_a_shadow_copy_in_flight(tmp_path: Path, backends,
                                                   scope: str) -> None:
    """A kill with abort_inflight (the default) cuts what is in flight to what it covers.
    Before: a copy already at the shadow was not: the killed shadow kept its connection, and
    the work on it, until the copy's own total timeout (30 s), and the answer was then
    compared and counted as if nothing had happened."""
    shadow = _HeldShadow()
    p2 = await shadow.start()
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, compare: json}",
                                       protocol="http", prefix="/v1"))
    try:
        async with running_gateway(cfg) as g, ClientSession() as session:
            async with session.post(g.url + "/v1/x", data=b"{}") as r:
                assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
            await asyncio.wait_for(shadow.got.wait(), 5)
            body: dict[str, Any] = {"scope": scope, "route": "iris"}
            if scope == "version":
                body["version"] = "v2"
            await kill(session, g.admin, **body)
            await asyncio.wait_for(shadow.gone.wait(), 3)
            got = await settled(session, g.admin, 1, "ended")
            assert got["compared"] == 0 and got["failures"] == {"killed": 1}, got
    finally:
        await shadow.stop()


@pytest.mark.parametrize("after, streamed", [
    ("{version: v2, sample: 0.0, compare: json}", False), ("null", False),
    ("{version: v2, sample: 0.0, compare: json}", True)])
async def test_no_copy_leaves_once_a_reload_stopped_mirroring_while_the_primary_answered(
        tmp_path: Path, backends, after: str, streamed: bool) -> None:
    """An operator stops the copies (sample 0, or the shadow removed: a shadow that must no
    longer see customers' requests): a request routed before the reload, whose answer came
    after it, still had its copy sent to the shadow, sampled by the settings the reload had
    replaced (up to the route's total timeout after it: a long stream's whole length).
    `streamed`: its answer had begun (a stream being collected for the copy) before it."""
    from tests.backends import sse_app

    rec = Recorder()
    p1 = await backends(sse_app("v1") if streamed else chat_app("v1", delay=0.5))
    p2 = await backends(echo_app("v2", rec))
    shadow = "{version: v2, sample: 1.0, compare: json}"
    cfg = write_config(tmp_path, route(p1, p2, shadow, protocol="http", prefix="/v1"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        mirror = g.gw.mirror
        if streamed:
            call = asyncio.create_task(session.get(g.url + "/v1/sse?n=4&interval=0.15"))
            await wait_until(lambda: mirror.inflight.get("iris") == 1)  # (its tap)
        else:
            call = asyncio.create_task(session.post(
                g.url + "/v1/chat/completions", data=chat_request(1),
                headers={"content-type": "application/json"}))
            await wait_until(lambda: g.gw.inflight.count == 1)
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, route(p1, p2, after, protocol="http",
                                                    prefix="/v1"), name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10)
        resp = await asyncio.wait_for(call, 10)
        assert resp.status == 200 and resp.headers["x-killgate-version"] == "v1"
        await resp.read()
        resp.release()
        # (a copy, if one was made, is done once no task is left)
        await wait_until(lambda: not mirror._tasks and not any(mirror.inflight.values()), 5)
        assert rec.requests == [], "the copy went out after the reload stopped mirroring"


async def test_no_noise_copy_leaves_once_a_reload_removed_the_noise_floor(
        tmp_path: Path, backends) -> None:
    """The noise floor sends the client's request a second time to the version that
    answered it: an operator removing `noise` (the primary is not idempotent: orders placed
    twice) still had that second request sent for every request being answered during the
    reload. The copy to the shadow still goes."""
    primary, seen = Recorder(), Recorder()
    p1 = await backends(chat_app("v1", recorder=primary, delay=0.5))
    p2 = await backends(echo_app("v2", seen))
    noise = "{version: v2, sample: 1.0, compare: json, noise: {sample: 1.0}}"
    cfg = write_config(tmp_path, route(p1, p2, noise, protocol="http", prefix="/v1"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        mirror = g.gw.mirror
        call = asyncio.create_task(session.post(
            g.url + "/v1/chat/completions", data=chat_request(1),
            headers={"content-type": "application/json"}))
        await wait_until(lambda: len(primary.requests) == 1)
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0, "
                                                    "compare: json}", protocol="http",
                                                    prefix="/v1"), name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10)
        resp = await asyncio.wait_for(call, 10)
        assert resp.status == 200 and resp.headers["x-killgate-version"] == "v1"
        resp.release()
        await wait_until(lambda: len(seen.requests) == 1, 5, what="the copy to the shadow")
        await wait_until(lambda: not mirror._tasks and not any(mirror.inflight.values()), 5)
        assert len(primary.requests) == 1, "the noise copy went to v1 after the reload"


@pytest.mark.parametrize("moved", ["shadow", "primary"])
async def test_no_copy_goes_to_a_deployment_a_reload_moved_while_the_primary_answered(
        tmp_path: Path, backends, moved: str) -> None:
    """A reload redeploys the shadow (or the primary, whose version gets the noise floor's
    second request) at another URL while a request is being answered. Its copy was still
    sent to the old URL, by the plan the reload had replaced: load on a deployment the
    operator moved away from (gone, or another service now), for a comparison counted
    nowhere (settings a reload replaced are never counted), and it opened the copies' pool
    to the old origin again after the reload had retired it, kept for good with its
    connections. Found by hostile shadow review (sixth pass)."""
    old_rec, new_rec, primary_rec = Recorder(), Recorder(), Recorder()
    p1 = await backends(chat_app("v1", recorder=primary_rec, delay=0.5))
    p1b = await backends(chat_app("v1", recorder=new_rec))
    p2 = await backends(echo_app("v2", old_rec))
    p3 = await backends(echo_app("v2", new_rec))
    shadow = "{version: v2, sample: 1.0, compare: json, noise: {sample: 1.0}}"
    cfg = write_config(tmp_path, route(p1, p2, shadow, protocol="http", prefix="/v1"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        mirror = g.gw.mirror
        call = asyncio.create_task(session.post(
            g.url + "/v1/chat/completions", data=chat_request(1),
            headers={"content-type": "application/json"}))
        await wait_until(lambda: len(primary_rec.requests) == 1)
        old = g.gw.loaded.digest
        after = route(p1, p3, shadow, protocol="http", prefix="/v1") if moved == "shadow" \
            else route(p1b, p2, shadow, protocol="http", prefix="/v1")
        cfg.write_text(write_config(tmp_path, after, name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10)
        resp = await asyncio.wait_for(call, 10)
        assert resp.status == 200 and resp.headers["x-killgate-version"] == "v1"
        resp.release()
        await wait_until(lambda: not mirror._tasks and not any(mirror.inflight.values()), 5)
        gone = p2 if moved == "shadow" else p1
        if moved == "shadow":
            assert old_rec.requests == [], "a copy went to the shadow's old deployment"
        else:
            assert len(primary_rec.requests) == 1, "a noise copy went to v1's old deployment"
        assert ("http", "127.0.0.1", gone) not in mirror.upstreams.pools, \
            "the copies' pool to the retired origin was opened again"
