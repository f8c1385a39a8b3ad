"""The admin listener answers only to its own names (gateway/admin/hosts.py): no DNS
rebinding. A page on another site that re-points its own name at 127.0.0.1 could read
the endpoints that need no login (`/metrics`, `/readyz`, `/openapi.json`, the console's
files): before, every Host was answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.admin.hosts import host_allowed
from gateway.config_admin import AdminConfig
from gateway.configfile import load_config
from gateway.errors import ConfigError
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.rawhttp import error_type, exchange

pytestmark = pytest.mark.timeout(30)


def _ask(path: str, host: str | None) -> bytes:
    head = f"GET {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "")
    return (head + "Connection: close\r\n\r\n").encode("latin-1")


@pytest.mark.parametrize(("host", "ok"), [
    ("localhost", True), ("LOCALHOST.:8081", True), ("console.localhost:8081", True),
    ("127.0.0.1:8081", True), ("127.0.0.1", True), ("[::1]:8081", True), ("10.1.2.3", True),
    ("", True), (None, True),
    ("evil.example", False), ("evil.example:8081", False), ("localhost.evil.example", False),
    ("127.0.0.1.nip.io", False), ("x", False)])
def test_a_loopback_listener_answers_to_localhost_and_addresses_only(host: str | None,
                                                                     ok: bool) -> None:
    assert host_allowed(host, AdminConfig(listen="127.0.0.1:8081")) is ok
    assert host_allowed(host, AdminConfig(listen="[::1]:8081")) is ok
    assert host_allowed(host, AdminConfig(listen="localhost:8081")) is ok


def test_allowed_hosts_add_names_and_apply_on_any_listener() -> None:
    named = AdminConfig(listen="127.0.0.1:8081", allowed_hosts=["Admin.Example.COM."])
    assert named.allowed_hosts == ["admin.example.com"]
    assert host_allowed("admin.example.com:8081", named)
    assert host_allowed("ADMIN.example.com.", named)
    assert not host_allowed("evil.example", named)
    assert host_allowed("evil.example", AdminConfig(listen="127.0.0.1:8081", allowed_hosts=["*"]))
    # a listener the network reaches answers to any name, unless the names are set
    assert host_allowed("killgate-admin.ns.svc", AdminConfig(listen="0.0.0.0:8081"))
    assert not host_allowed("evil.example", AdminConfig(listen="0.0.0.0:8081",
                                                        allowed_hosts=["killgate.internal"]))
    assert host_allowed("10.0.0.7:8081", AdminConfig(listen="0.0.0.0:8081",
                                                     allowed_hosts=["killgate.internal"]))


@pytest.mark.parametrize("bad", ["admin.example.com:8081", "https://admin.example.com",
                                 "a b", "", "-x.example", "x" * 300])
def test_a_bad_allowed_host_is_refused_by_check(tmp_path: Path, bad: str) -> None:
    cfg = write_config(tmp_path, two_versions(1, 2))
    text = cfg.read_text().replace("admin:\n", f"admin:\n  allowed_hosts: [{bad!r}]\n", 1)
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "allowed_hosts" in str(err.value)


async def test_a_rebound_name_gets_421_and_nothing_else(tmp_path: Path, backends) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1))
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        for path in ("/metrics", "/readyz", "/openapi.json", "/ui/", "/healthz"):
            status, headers, body = await exchange(port, _ask(path, f"evil.example:{port}"))
            assert status == 421 and error_type(body) == "host_not_allowed", (path, body)
            assert b"iris" not in body and headers["x-content-type-options"] == "nosniff"
        status, _, body = await exchange(port, _ask("/metrics", f"localhost:{port}"))
        assert status == 200 and b"killgate_admin_refused_total" in body
        assert g.gw.metrics.get("killgate_admin_refused_total", ("host",)) == 5
        status, _, _ = await exchange(port, _ask("/readyz", f"127.0.0.1:{port}"))
        assert status == 200


async def test_allowed_hosts_let_a_name_through(tmp_path: Path, backends) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1))
    cfg.write_text(cfg.read_text().replace("admin:\n", "admin:\n  allowed_hosts: [kg.test]\n", 1))
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        status, _, _ = await exchange(port, _ask("/healthz", f"kg.test:{port}"))
        assert status == 200
        status, _, _ = await exchange(port, _ask("/healthz", "other.test"))
        assert status == 421


async def test_a_reload_moving_admin_listen_changes_nothing_until_the_restart(
        tmp_path: Path, backends) -> None:
    """admin.listen waits for a restart (config.restart_required), but the Host check read
    it from the reloaded file: a reload moving the listener to 127.0.0.1 (hardening,
    committed before the restart) answered 421 at once to the names Prometheus and the
    CLI reach the still wildcard listener by; one moving it off loopback lifted the
    check on a listener still on 127.0.0.1. The check follows the address bound."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1), admin="0.0.0.0:0")
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, two_versions(p1, p1), name="next.yaml",
                                    admin=f"127.0.0.1:{port}").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.loaded_digest != old, 10, what="reload")
        assert g.gw.watcher.outcome.restart_required == ["admin.listen"]
        status, _, body = await exchange(port, _ask("/metrics", f"killgate-admin:{port}"))
        assert status == 200, body
    cfg = write_config(tmp_path, two_versions(p1, p1))
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, two_versions(p1, p1), name="next.yaml",
                                    admin=f"0.0.0.0:{port}").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.loaded_digest != old, 10, what="reload")
        status, _, body = await exchange(port, _ask("/metrics", f"evil.example:{port}"))
        assert status == 421, body
