"""control/events.py: every audited action posted to the webhooks — one shape, signed,
retried with backoff, never blocking the action."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from gateway.control.events import SCHEMA, payload, sign
from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config
from tests.test_alerting import payload as am_payload

HOOK_SECRET = "hook-secret-0123456789-abcdefghijklmnop"
ADMIN = bearer("killgate:admin", "alice", 3 * 3600)


class Receiver:
    """A webhook receiver: records each delivery; answers `fail` times with `status` first."""

    def __init__(self, fail: int = 0, status: int = 503, delay: float = 0.0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        self.fail = fail
        self.status = status
        self.delay = delay

    def app(self) -> web.Application:
        async def handler(req: web.Request) -> web.Response:
            self.attempts += 1
            body = await req.read()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail > 0:
                self.fail -= 1
                return web.json_response({}, status=self.status)
            self.got.append(({k.lower(): v for k, v in req.headers.items()}, body))
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/hook", handler)
        return app

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.got]


def verify(headers: dict[str, str], body: bytes, secret: str = HOOK_SECRET) -> bool:
    """What a receiver does: recompute the HMAC over `<t>.<body>` and compare."""
    parts = dict(p.split("=", 1) for p in headers["x-killgate-signature"].split(","))
    want = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def test_payload_shape_and_signature() -> None:
    ev = {"id": "e1", "time": "2024-05-01T10:00:00.000Z", "actor": "alertmanager/k",
          "action": "kill", "target": {"scope": "version", "route": "iris", "version": "v2"},
          "reason": "r", "before": None, "after": {"x": 1}, "request_id": "q", "source": "1.2.3.4",
          "evidence": {"alert": {}}, "hash": "h"}
    p = payload(ev, 7, "host-1")
    assert p["schema"] == SCHEMA and p["event"] == "killgate.kill" and p["trigger"] == "alert"
    assert (p["route"], p["version"], p["generation"], p["instance"]) == ("iris", "v2", 7, "host-1")
    assert p["id"] == p["audit_id"] == "e1" and p["audit_hash"] == "h"
    assert payload({**ev, "actor": "killgate/auto"}, 1, "h")["trigger"] == "automatic"
    assert payload({**ev, "actor": "alice"}, 1, "h")["trigger"] == "person"
    body = b'{"a":1}'
    assert verify({"x-killgate-signature": sign(HOOK_SECRET.encode(), body, int(time.time()))},
                  body)
    assert not verify({"x-killgate-signature": sign(b"other-secret", body, int(time.time()))},
                      body)


def test_payload_says_how_a_gated_change_got_through() -> None:
    ev = {"id": "e1", "time": "t", "actor": "alice", "action": "unkill",
          "target": {"scope": "global"}, "reason": "r", "hash": "h"}
    p = payload(ev, 3, "h")
    assert p["break_glass"] is False and p["approval"] is None  # an ungated write
    assert payload({**ev, "break_glass": True}, 3, "h")["break_glass"] is True
    approval = {"id": "ap-0123456789abcdef", "requested_by": "alice",
                "approved_by": ["alice", "bob"], "hash": "0" * 64, "final_reason": "ok"}
    assert payload({**ev, "approval": approval}, 3, "h")["approval"] == approval


def _events_cfg(port: int, extra: str = "  timeout: 1s\n") -> str:
    return ("events:\n  backoff: 20ms\n" + extra +
            f"  webhooks:\n    - {{url: 'http://127.0.0.1:{port}/hook', "
            "secret_env: KILLGATE_TEST_HOOK_SECRET}\n")


@pytest.fixture(autouse=True)
def _hook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILLGATE_TEST_HOOK_SECRET", HOOK_SECRET)


async def _call(session: ClientSession, method: str, url: str, body: dict[str, Any],
                headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    async with session.request(method, url, json=body, headers=headers) as r:
        data = await r.json()
        assert r.status == 200, data
        return dict(data)


async def test_every_action_is_posted_once_signed(tmp_path: Path, backends, session) -> None:
    rcv = Receiver()
    p = await backends(echo_app("v1"))
    ph = await backends(rcv.app())
    cfg = write_config(tmp_path, two_versions(p, p, 90, 10),
                       extra=_events_cfg(ph) + "alerts:\n  alertmanager: {}\n")
    async with running_gateway(cfg) as g:
        a = g.admin
        await _call(session, "POST", a + "/v1/kill", {"scope": "version", "route": "iris",
                                                      "version": "v2", "reason": "bad"})
        await _call(session, "POST", a + "/v1/kill", {"scope": "version", "route": "iris",
                                                      "version": "v2", "reason": "again"})
        await _call(session, "POST", a + "/v1/unkill", {"scope": "version", "route": "iris",
                                                        "version": "v2", "reason": "ok"})
        await _call(session, "POST", a + "/v1/routes/iris/promote",
                    {"version": "v2", "reason": "good"})
        await _call(session, "POST", a + "/v1/routes/iris/rollback", {"reason": "oops"})
        await _call(session, "PUT", a + "/v1/routes/iris/weights",
                    {"weights": {"v1": 50, "v2": 50}, "reason": "w"})
        await _call(session, "POST", a + "/v1/routes/iris/release", {"reason": "r"})
        await _call(session, "POST", a + "/v1/alerts/alertmanager",
                    am_payload(killgate_action="kill", route="iris"))
        await wait_until(lambda: len(rcv.got) >= 7, 10, what="7 deliveries")
        assert await g.gw.events.drained(5)
    events = rcv.events()
    assert [e["event"] for e in events] == [
        "killgate.kill", "killgate.unkill", "killgate.promote", "killgate.rollback",
        "killgate.weights", "killgate.release", "killgate.kill"]  # the repeat kill: no change
    assert [e["trigger"] for e in events] == ["person"] * 6 + ["alert"]
    assert events[-1]["actor"] == "alertmanager/killgate"
    assert events[-1]["evidence"]["alert"]["labels"]["alertname"] == "KillgateCanaryErrorRate"
    assert events[0]["target"] == {"scope": "version", "route": "iris", "version": "v2"}
    assert events[0]["reason"] == "bad" and events[0]["actor"] == "alice"
    gens = [e["generation"] for e in events]
    assert gens == sorted(gens) and len(set(gens)) == 7
    for headers, body in rcv.got:
        assert verify(headers, body), headers
        assert headers["x-killgate-event"] == json.loads(body)["event"]
        assert headers["content-type"] == "application/json"


async def test_retried_with_backoff_until_delivered(tmp_path: Path, backends, session) -> None:
    rcv = Receiver(fail=2)
    p = await backends(echo_app("v1"))
    ph = await backends(rcv.app())
    cfg = write_config(tmp_path, two_versions(p, p), extra=_events_cfg(ph))
    async with running_gateway(cfg) as g:
        await _call(session, "POST", g.admin + "/v1/kill", {"scope": "route", "route": "iris",
                                                            "reason": "x"})
        await wait_until(lambda: rcv.got, 10, what="the delivery after two failures")
        assert rcv.attempts == 3
        deliveries = {h["x-killgate-delivery"] for h, _ in rcv.got}
        assert len(rcv.got) == 1 and len(deliveries) == 1
        # (counted once the gateway has read the receiver's 2xx: after `rcv.got` is set)
        await wait_until(lambda: g.gw.metrics.get("killgate_event_deliveries_total",
                                                  ("delivered",)) == 1, 5, what="counted")
        assert g.gw.metrics.get("killgate_event_deliveries_total", ("delivered",)) == 1


async def test_a_refusing_receiver_is_not_retried(tmp_path: Path, backends, session) -> None:
    rcv = Receiver(fail=100, status=400)
    p = await backends(echo_app("v1"))
    ph = await backends(rcv.app())
    cfg = write_config(tmp_path, two_versions(p, p), extra=_events_cfg(ph))
    async with running_gateway(cfg) as g:
        await _call(session, "POST", g.admin + "/v1/kill", {"scope": "route", "route": "iris",
                                                            "reason": "x"})
        await wait_until(lambda: g.gw.metrics.get("killgate_event_deliveries_total",
                                                  ("failed",)) == 1, 10)
        assert rcv.attempts == 1


async def test_a_hanging_receiver_never_slows_the_action(tmp_path: Path, backends,
                                                         session) -> None:
    """The receiver takes 30 s to answer and the queue holds 2: kills answer at once,
    events beyond the queue are dropped and counted."""
    rcv = Receiver(delay=30)
    p = await backends(echo_app("v1"))
    ph = await backends(rcv.app())
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra=_events_cfg(ph, "  queue: 2\n  timeout: 60s\n"))
    async with running_gateway(cfg) as g:
        took = []
        for i in range(20):
            t0 = time.monotonic()
            body = {"scope": "route", "route": "iris", "reason": f"r{i}"}
            await _call(session, "POST", g.admin + ("/v1/kill" if i % 2 == 0 else "/v1/unkill"),
                        body)
            took.append(time.monotonic() - t0)
        assert max(took) < 1.0, took
        dropped = g.gw.metrics.get("killgate_event_deliveries_total", ("dropped",))
        # in memory at most: 8 deliveries in flight, 1 waiting for a slot, 2 queued
        assert dropped >= 20 - 8 - 1 - 2
        async with session.get(g.url + "/v2/models/iris/infer") as r:
            assert r.status == 200  # and the data plane serves (the last write was an unkill)


@pytest.mark.parametrize("weak", [None, "short-secret-31-bytes-xxxxxxxxx"])
async def test_filter_and_missing_secret(tmp_path: Path, backends, session,
                                         monkeypatch: pytest.MonkeyPatch,
                                         weak: str | None) -> None:
    """A webhook whose secret is missing, or shorter than 32 bytes (guessable: before, a
    1-byte secret signed events), gets nothing."""
    only_kills, unsigned = Receiver(), Receiver()
    p = await backends(echo_app("v1"))
    p1, p2 = await backends(only_kills.app()), await backends(unsigned.app())
    if weak is None:
        monkeypatch.delenv("KILLGATE_TEST_MISSING", raising=False)
    else:
        assert len(weak) == 32 - 1
        monkeypatch.setenv("KILLGATE_TEST_MISSING", weak)
    extra = ("events:\n  webhooks:\n"
             f"    - {{url: 'http://127.0.0.1:{p1}/hook', secret_env: KILLGATE_TEST_HOOK_SECRET,"
             " events: [kill]}\n"
             f"    - {{url: 'http://127.0.0.1:{p2}/hook', secret_env: KILLGATE_TEST_MISSING}}\n")
    cfg = write_config(tmp_path, two_versions(p, p), extra=extra)
    async with running_gateway(cfg) as g:
        for path in ("/v1/kill", "/v1/unkill", "/v1/kill"):
            await _call(session, "POST", g.admin + path,
                        {"scope": "route", "route": "iris", "reason": "x"})
        await wait_until(lambda: len(only_kills.got) == 2, 10)
        assert await g.gw.events.drained(5)
        assert g.gw.metrics.get("killgate_event_deliveries_total", ("failed",)) == 3
    assert [e["event"] for e in only_kills.events()] == ["killgate.kill", "killgate.kill"]
    assert unsigned.attempts == 0  # never sent unsigned


async def test_a_reload_adding_a_webhook_without_its_secret_says_so(
        tmp_path: Path, backends, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A webhook whose secret cannot be read is an ERROR at start; one a reload added said
    nothing until the first event to it (a kill, say) was not sent."""
    monkeypatch.delenv("KILLGATE_TEST_MISSING", raising=False)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, two_versions(p, p), name="next.yaml", extra=(
            "events:\n  webhooks:\n    - {url: 'http://127.0.0.1:1/hook', "
            "secret_env: KILLGATE_TEST_MISSING}\n")).read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.loaded_digest != old, 10, what="reload")
        assert any("event_webhook_without_secret" in r.getMessage() for r in caplog.records)


def _token(sub: str, scope: str) -> dict[str, str]:
    return bearer(scope, sub, 600)


async def test_break_glass_and_approved_writes_say_so_in_their_events(
        tmp_path: Path, backends, session: ClientSession) -> None:
    rcv = Receiver()
    p = await backends(echo_app("v1"))
    ph = await backends(rcv.app())
    cfg = write_config(tmp_path, two_versions(p, p, 90, 10),
                       extra=_events_cfg(ph) + "approvals: {unkill_global: 2, promote: 2}\n")
    async with running_gateway(cfg) as g:
        a = g.admin
        await _call(session, "POST", a + "/v1/kill", {"scope": "global", "reason": "x"})
        await _call(session, "POST", a + "/v1/unkill",
                    {"scope": "global", "reason": "over", "break_glass": True},
                    _token("alice", "killgate:kill killgate:breakglass"))
        async with session.post(a + "/v1/routes/iris/promote", json={
                "version": "v2", "reason": "good"}, headers=_token("alice", "killgate:admin")) as r:
            assert r.status == 202
            ident = (await r.json())["approval"]["id"]
        await _call(session, "POST", a + f"/v1/approvals/{ident}/approve", {"reason": "agreed"},
                    _token("bob", "killgate:rollout"))
        await wait_until(lambda: len(rcv.got) >= 3, 10, what="3 deliveries")
    kill, unkill, promote = rcv.events()
    assert [e["event"] for e in (kill, unkill, promote)] == [
        "killgate.kill", "killgate.unkill", "killgate.promote"]
    assert kill["break_glass"] is False and kill["approval"] is None
    assert unkill["break_glass"] is True and unkill["actor"] == "alice"
    assert promote["approval"]["id"] == ident
    assert promote["approval"]["approved_by"] == ["alice", "bob"]
    assert promote["break_glass"] is False and unkill["approval"] is None
