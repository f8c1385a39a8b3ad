"""A new user's first hour, from the README alone (revnewuser6): what they tried by hand and
what it answered. A kill sent to the admin API without `scope` (the CLI's `--route R
--version V` has none) says what to send; `killgate diff` of a file the gateway already
reloaded on its own (it watches its config file) says so, instead of a bare "no changes"; a
backend that cannot be reached is said in words (the 502, the health check's reason)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from gateway.control.probeclient import ProbeClient
from tests.backends import echo_app
from tests.conftest import (
    admin_token,
    free_port,
    running_gateway,
    two_versions,
    write_config,
)
from tests.rawhttp import exchange, request
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)


async def test_a_kill_without_scope_says_what_to_send(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    auth = {"Authorization": f"Bearer {admin_token('killgate:admin', 'ops', 600)}"}
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        status, _, body = await exchange(port, request(
            "POST", "/v1/kill", b'{"route": "iris", "version": "v2", "reason": "x"}', auth))
        assert status == 400, body
        message = json.loads(body)["error"]["message"]
        assert message.startswith("'scope' is missing"), message
        assert ('send "scope": "version" with "route" and "version" for a version kill'
                in message), message
        assert message.endswith('"route" with "route" for a route kill, or "global"'), message
        status, _, body = await exchange(port, request(
            "POST", "/v1/kill", b'{"scope": "versoin", "route": "iris", "reason": "x"}', auth))
        assert status == 400, body
        message = json.loads(body)["error"]["message"]
        assert message.startswith("'scope' must be one of global, route, version"), message
        assert '"route" with "route" for a route kill' in message, message
        assert g.gw.holder.doc.kills == {}


async def test_diff_of_a_file_the_gateway_already_reloaded_says_so(
        tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    env = {"KILLGATE_TOKEN": admin_token("killgate:read", "ops", 600)}
    async with running_gateway(cfg) as g:
        env["KILLGATE_ADMIN_URL"] = g.admin
        # the README's "then set each version's url": an edit the watcher applies at once
        cfg.write_text(cfg.read_text() + "alerts: {alertmanager: {mode: act}}\n")
        res = await acli("diff", str(cfg), env=env)
        deadline = asyncio.get_running_loop().time() + 20
        while res.returncode == 2:  # (until the watcher has reloaded it)
            assert asyncio.get_running_loop().time() < deadline, res.stdout
            await asyncio.sleep(0.1)
            res = await acli("diff", str(cfg), env=env)
        assert res.returncode == 0, (res.stdout, res.stderr)
        assert res.stdout.startswith("no changes against the running gateway\n"), res.stdout
        assert "already runs exactly this file's content" in res.stdout, res.stdout
        assert "edit a copy and diff the copy" in res.stdout, res.stdout
        # against another file, the note is not given (it is about the running gateway)
        other = tmp_path / "same.yaml"
        other.write_text(cfg.read_text())
        res = await acli("diff", str(cfg), "--against", str(other), env=env)
        assert res.returncode == 0 and "already runs" not in res.stdout, res.stdout


async def test_a_backend_name_that_does_not_resolve_is_said_in_words(tmp_path: Path) -> None:
    # config/container.yaml's versions are `http://iris-v1:8080`: run as the README's
    # `podman run` shows, with no such container beside it, every call answered
    # "the backend failed: cannot connect: Unknown error -2" (getaddrinfo's EAI_NONAME)
    routes = textwrap.dedent("""\
        - name: iris
          match: {path_prefix: /v2/models/iris}
          stable: v1
          versions:
            - {name: v1, url: "http://iris-v1.invalid:8080", weight: 100}
        """)
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(g.gw.data_addr[1], request(
            "POST", "/v2/models/iris/infer", b"{}"), timeout=30)
        assert status == 502, body
        message = json.loads(body)["error"]["message"]
        assert "Unknown error" not in message, message
        assert "cannot connect: the backend's host name did not resolve (" in message, message
        assert "iris-v1.invalid" not in message, message  # (the client never learns it)


async def test_a_health_check_that_cannot_connect_says_why_in_words() -> None:
    # the log's `health_changed ... healthy=false` gave aiohttp's class name as the reason,
    # `error="ClientConnectorDNSError"` or `"ClientConnectorError"` (refused, unreachable)
    client = ProbeClient()
    client.open()
    try:
        ok, why = await client.check("http://iris-v2.invalid:8080/ready", 10.0)
        assert not ok and why is not None, why
        assert why.startswith("cannot connect: the backend's host name did not resolve ("), why
        port = free_port()  # (nothing listens there)
        ok, why = await client.check(f"http://127.0.0.1:{port}/ready", 10.0)
        assert (ok, why) == (False, "cannot connect: Connection refused")
    finally:
        await client.close()
