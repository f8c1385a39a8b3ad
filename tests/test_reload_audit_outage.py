"""A config reload made while the state store does not answer is audited once it answers
(found by impreloadaudit): `_audit` caught the StateError, logged
`config_reload_audit_failed` and dropped the event, so the trail had no `config.reload` for
the change. The change is kept now and tried again with back-off (control/reloadaudit.py);
`/v1/status` lists it while it waits. Real redis-server, frozen (SIGSTOP) through the
reload, then thawed (or stopped, then started again): the event appears once, with the time
of the change; a second reload made while the first waits is recorded too, after it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.staterig import redis_state
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(60)


def reload_events(redis: RedisServer) -> list[dict[str, Any]]:
    """The `config.reload` events in the stream, oldest first (our own raw read)."""
    raw = redis.cmd("XRANGE", "kgtest:audit", "-", "+")
    out = []
    for line in raw.split("\r\n"):
        if line.startswith("{") and '"config.reload"' in line:
            ev = json.loads(line)
            if ev.get("action") == "config.reload":
                out.append(ev)
    return out


async def test_reloads_made_while_the_store_is_frozen_are_audited_once_in_order(
        tmp_path: Path, backends: Any, redis_server: RedisServer, session: ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, "a")
    a = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}),
                     state=state, name="a.yaml")
    b = write_config(tmp_path, _route("iris", {"v1": (p1, 90), "v2": (p2, 10)}),
                     state=state, name="b.yaml")
    c = write_config(tmp_path, _route("iris", {"v1": (p1, 80), "v2": (p2, 20)}),
                     state=state, name="c.yaml")
    cfg = tmp_path / "killgate.yaml"
    cfg.write_bytes(a.read_bytes())
    cfg.chmod(0o600)
    caplog.set_level(logging.INFO, logger="killgate")
    async with running_gateway(cfg, "a") as g:
        digests = [g.gw.loaded.digest]
        thawed = False
        redis_server.freeze()
        try:
            for src in (b, c):
                cfg.write_bytes(src.read_bytes())
                g.gw.request_reload()
                await wait_until(lambda s=src: g.gw.loaded.raw == s.read_bytes(), 15,
                                 what="the reload")
                digests.append(g.gw.loaded.digest)

            def failed() -> bool:  # (the first audit's try has ended: the store is away)
                return any("config_reload_audit_failed" in r.getMessage()
                           or "config_reload_audit_pending" in r.getMessage()
                           for r in caplog.records)

            await wait_until(failed, 20, what="the audit's first try to fail")
            pending = g.gw.status_builder.config_status()["audit_pending"]
            assert [(p["from"], p["to"]) for p in pending] == [
                (digests[0], digests[1]), (digests[1], digests[2])], pending
            assert pending[0]["tries"] >= 1 and pending[0]["error"], pending
            redis_server.thaw()
            thawed = True

            def recorded() -> bool:
                return len(reload_events(redis_server)) >= 2

            await wait_until(recorded, 30, interval=0.1, what="the reloads' audit events")
            await wait_until(lambda: not g.gw.status_builder.config_status()["audit_pending"],
                             10, what="status to list no pending audit")
        finally:
            if not thawed:
                redis_server.thaw()
        async with session.get(f"{g.admin}/v1/status", headers=auth()) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["config"]["audit_pending"] == []
        events = reload_events(redis_server)
        assert [(e["before"]["digest"], e["after"]["digest"]) for e in events] == [
            (digests[0], digests[1]), (digests[1], digests[2])], events
        # (the time of the change, not of the write after the store came back)
        assert all(e["after"]["changed_at"] <= e["time"] for e in events), events


async def test_an_audit_whose_commit_answer_was_lost_is_written_once(
        tmp_path: Path, backends: Any, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store frozen just as the reload's event is committed: the commit's answer is lost
    (StoreOutcomeUnknown), and the frozen redis-server runs it once thawed. The next try
    finds the event on the trail and does not write it again (it did, twice, if it only
    retried)."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, "a")
    a = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}),
                     state=state, name="a.yaml")
    b = write_config(tmp_path, _route("iris", {"v1": (p1, 90), "v2": (p2, 10)}),
                     state=state, name="b.yaml")
    cfg = tmp_path / "killgate.yaml"
    cfg.write_bytes(a.read_bytes())
    cfg.chmod(0o600)
    caplog.set_level(logging.INFO, logger="killgate")
    async with running_gateway(cfg, "a") as g:
        store = g.gw.sync.store
        real_script = store._script
        frozen: list[bool] = []

        async def script(*args: Any, **kw: Any) -> Any:  # (the commit script's call)
            if not frozen and kw.get("writes") and any(
                    b'"config.reload"' in (x if isinstance(x, bytes) else x.encode())
                    for x in args[2]):
                frozen.append(True)
                redis_server.freeze()  # (the commit is sent to it, its answer never comes)
            return await real_script(*args, **kw)

        monkeypatch.setattr(store, "_script", script)
        try:
            cfg.write_bytes(b.read_bytes())
            g.gw.request_reload()
            await wait_until(lambda: g.gw.loaded.raw == b.read_bytes(), 15, what="the reload")
            digest = g.gw.loaded.digest

            def unknown() -> bool:
                return any("config_reload_audit_pending" in r.getMessage()
                           for r in caplog.records)

            await wait_until(unknown, 20, what="the commit's answer to be lost")
            lost = g.gw.history.pending()
            assert lost and lost[0]["event_sent"], lost  # (its hash: looked for next)
        finally:
            redis_server.thaw()
        await wait_until(lambda: not g.gw.history.pending(), 30, interval=0.1,
                         what="the audit to be recorded")
        # (recorded: a second write, had there been one, was made before it counted so)
        events = [e for e in reload_events(redis_server) if e["after"]["digest"] == digest]
        assert len(events) == 1, events


async def test_a_reload_made_while_the_store_is_down_is_audited_once_it_is_back(
        tmp_path: Path, backends: Any, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """The redis-server stopped (not frozen: connections refused) through the reload, then
    started again on its port, empty (no persistence): the instance puts its state back
    there, and the change's event is written then, once."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, "a")
    a = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}),
                     state=state, name="a.yaml")
    b = write_config(tmp_path, _route("iris", {"v1": (p1, 90), "v2": (p2, 10)}),
                     state=state, name="b.yaml")
    cfg = tmp_path / "killgate.yaml"
    cfg.write_bytes(a.read_bytes())
    cfg.chmod(0o600)
    caplog.set_level(logging.INFO, logger="killgate")
    async with running_gateway(cfg, "a") as g:
        redis_server.kill()
        cfg.write_bytes(b.read_bytes())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.raw == b.read_bytes(), 15, what="the reload")
        digest = g.gw.loaded.digest
        await wait_until(lambda: any("config_reload_audit_pending" in r.getMessage()
                                     for r in caplog.records), 20, what="a failed try")
        assert g.gw.history.pending(), "status lists no pending audit"
        redis_server.start()
        await wait_until(lambda: not g.gw.history.pending(), 30, interval=0.1,
                         what="the audit to be recorded")
        events = [e for e in reload_events(redis_server) if e["after"]["digest"] == digest]
        assert len(events) == 1, events
