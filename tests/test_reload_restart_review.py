"""What a reload cannot change shows as such (hostile config review): the drill key
settings are read once, at start, and were not listed in config.restart_required; and
`killgate status` did not print restart_required at all, so a change in git that is not in
force looked applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, wait_until, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)


async def test_status_says_which_changes_wait_for_a_restart(tmp_path: Path, backends) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2))
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest
        cfg.write_text(write_config(
            tmp_path, two_versions(p1, p2), name="next.yaml",
            extra="server: {max_body_size: 1000}\ndrills: {key_env: OTHER_DRILL_KEY}\n",
            admin="127.0.0.1:0\n  max_connections: 7"
        ).read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.loaded_digest != old, 10, what="reload")
        assert g.gw.watcher.outcome.restart_required == ["server", "admin.max_connections",
                                                          "drills.key_env"]
        res = await acli("status", env={"KILLGATE_ADMIN_URL": g.admin,
                                        "KILLGATE_TOKEN": admin_token("killgate:read")})
        assert res.returncode == 0, res.stderr
        assert "RESTART REQUIRED for: server, admin.max_connections, drills.key_env" in res.stdout, res.stdout


def test_a_restarted_worker_keeps_the_admin_and_drill_settings_the_group_started_with(
        tmp_path: Path) -> None:
    """workerconfig.as_started takes every setting restart_changes names from the group's
    start, dotted ones (admin.max_connections, drills.key_env) field by field."""
    from gateway.configfile import load_config
    from gateway.workerconfig import as_started

    routes = two_versions(1, 2)
    started = load_config(write_config(tmp_path, routes, name="a.yaml",
                                       extra="drills: {key_env: DRILL_A}\n"))
    loaded = load_config(write_config(tmp_path, routes, name="b.yaml",
                                      admin="127.0.0.1:0\n  max_connections: 7",
                                      extra="drills: {key_env: DRILL_B, max_duration: 10m}\n"))
    got = as_started(loaded, started).config
    assert got.admin.max_connections == started.config.admin.max_connections
    assert got.drills.key_env == "DRILL_A" and got.drills.max_duration == 600
    assert got.admin.auth == loaded.config.admin.auth and got.routes == loaded.config.routes


async def test_a_later_reload_keeps_saying_what_waits_for_a_restart(tmp_path: Path,
                                                                   backends) -> None:
    """restart_required is against the settings the process started with: a second reload
    that changed only a route said nothing waited any more (the first one's server change
    was still not in force), and one that put a setting back listed it as waiting."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2))
    async with running_gateway(cfg) as g:
        w = g.gw.watcher

        async def reload_to(w1: float, extra: str) -> None:
            old = w.outcome.loaded_digest
            cfg.write_text(write_config(tmp_path, two_versions(p1, p2, w1, 100 - w1),
                                        name="next.yaml", extra=extra).read_text())
            g.gw.request_reload()
            await wait_until(lambda: w.outcome.loaded_digest != old, 10, what="reload")

        await reload_to(90, "server: {max_body_size: 1000}\n")
        assert w.outcome.restart_required == ["server"]
        await reload_to(80, "server: {max_body_size: 1000}\n")  # (a weight only)
        assert w.outcome.restart_required == ["server"]
        await reload_to(70, "")  # the server settings the process runs with, again
        assert w.outcome.restart_required == []


async def test_the_events_queue_size_waits_for_a_restart(tmp_path: Path, backends) -> None:
    """events.queue sizes a queue made once, at start: a reload changing it was applied
    (no restart_required) while the queue kept its first size."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1))
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, two_versions(p1, p1), name="next.yaml",
                                    extra="events: {queue: 5}\n").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.loaded_digest != old, 10, what="reload")
        assert g.gw.watcher.outcome.restart_required == ["events.queue"]
        assert g.gw.events._queue is not None and g.gw.events._queue.maxsize == 1000


async def test_a_stop_keeps_the_drain_settings_the_process_started_with(
        tmp_path: Path, backends, caplog: pytest.LogCaptureFixture) -> None:
    """server.shutdown_delay and drain_timeout were read at the stop from the config a
    reload put live, while /v1/status said RESTART REQUIRED for `server`: a reload that
    lowered shutdown_delay to 0s took the process out of its load balancer at once."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2),
                       extra="server: {shutdown_delay: 100ms, drain_timeout: 2s}\n")
    caplog.set_level("INFO", logger="killgate")
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, two_versions(p1, p2), name="next.yaml",
                                    extra="server: {shutdown_delay: 0s, drain_timeout: 9s}\n"
                                    ).read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.loaded_digest != old, 10, what="reload")
        assert g.gw.watcher.outcome.restart_required == ["server"]
    phases = {r.kg_fields["phase"]: r.kg_fields for r in caplog.records  # type: ignore[attr-defined]
              if r.getMessage() == "phase"}
    assert phases["unready"]["serving_s"] == 0.1, phases
    assert phases["draining"]["timeout_s"] == 2.0, phases
