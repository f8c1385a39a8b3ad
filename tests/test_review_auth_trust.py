"""Hostile review of the admin API's trust boundary (stop 42's caches and beyond), as an
attacker who can reach the admin port. Each test is a defect found and fixed, proven on an
in-process gateway over real HTTP."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(60)

ISS, AUD = "killgate", "killgate-admin"
OLD = "scoped-old-secret-0123456789-abcdefghijklmnop"
NEW = "scoped-new-secret-0123456789-abcdefghijklmnop"


def _write_secret(path: Path, secret: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(secret + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _token(secret: str, kid: str, scope: str = "killgate:read", sub: str = "job") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "scope": scope, "iat": now, "exp": now + 300,
                       "iss": ISS, "aud": AUD}, secret, algorithm="HS256",
                      headers={"kid": kid})


async def _status(s: ClientSession, admin: str, token: str) -> int:
    async with s.get(admin + "/v1/status", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


async def test_a_scoped_key_rotated_in_its_file_stops_verifying_at_reload(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The main key from the environment, a scoped key from a file: the scoped key leaks,
    the operator writes a new secret into its file (the config unchanged) and reloads. The
    reload read the key files again only when the *main* key came from a file, so the leaked
    scoped secret went on minting valid tokens until a restart (and its tokens verified
    before stayed in the principal cache)."""
    p = await backends(echo_app("v1"))
    key = tmp_path / "bot.secret"
    _write_secret(key, OLD)
    cfg = write_config(tmp_path, two_versions(p, p), extra="server: {watch_config: false}\n")
    scoped = textwrap.dedent("""\
        scoped_keys:
          - name: bot
            hs256_secret_file: bot.secret
            max_scopes: [killgate:read]
        """)
    cfg.write_text(cfg.read_text().replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n" + textwrap.indent(scoped, "    ")))
    async with running_gateway(cfg) as g:
        watcher = g.gw.watcher
        assert watcher is not None
        cached = _token(OLD, "bot")
        assert await _status(session, g.admin, cached) == 200  # (now in the verified cache)
        _write_secret(key, NEW)
        await watcher.reload("sighup")  # (False: the config file itself is unchanged)
        assert await _status(session, g.admin, _token(NEW, "bot")) == 200
        assert await _status(session, g.admin, _token(OLD, "bot", sub="fresh")) == 401
        assert await _status(session, g.admin, cached) == 401


def _shipped_admins() -> list[tuple[str, Any, list[str]]]:
    """(where, its admin settings, the names its own clients use) of every shipped config
    whose admin listener is not on a loopback address (a container's, a pod's)."""
    from gateway.configfile import load_config
    from tests.conftest import ROOT
    from tests.test_kubernetes import BASE, OVERLAY, _config_of, _one

    # the kubernetes clients: the drill CronJob, README's `--admin http://killgate-admin:8081`
    # (a port-forward is localhost, the kubelet and Prometheus use the pod's IP)
    k8s = ["killgate-admin:8081", "killgate-admin.killgate.svc.cluster.local:8081"]
    out = [(f"{folder.name} ConfigMap", _config_of(_one("ConfigMap", folder)).admin, k8s)
           for folder in (BASE, OVERLAY)]
    return [*out, ("config/container.yaml",
                   load_config(ROOT / "config/container.yaml").config.admin, [])]


@pytest.mark.parametrize(("where", "admin", "names"), _shipped_admins(),
                         ids=lambda v: v if isinstance(v, str) else "")
async def test_the_shipped_configs_refuse_a_rebinding_host_behind_a_published_port(
        where: str, admin: Any, names: list[str], tmp_path: Path, backends) -> None:
    """README runs the container with `-p 127.0.0.1:8081:8081` and reaches the pods with a
    port-forward: either way the operator's browser reaches the admin port at 127.0.0.1,
    the DNS-rebinding case admin/hosts.py exists for. But inside, the listener is on `[::]`
    (not loopback), and with `allowed_hosts` unset such a listener answered to any name: a
    page that pointed its own name at 127.0.0.1 read `/metrics`, `/readyz` (the fleet's
    state), `/openapi.json` and the console through the published port."""
    from gateway.config_types import is_loopback, parse_listen
    from tests.conftest import free_port

    assert not is_loopback(parse_listen(admin.listen)[0]), where
    p = await backends(echo_app("v1"))
    port = free_port()
    hosts = "" if admin.allowed_hosts is None else f"  allowed_hosts: {admin.allowed_hosts}\n"
    cfg = write_config(tmp_path, two_versions(p, p), admin=f'"[::]:{port}"')
    cfg.write_text(cfg.read_text().replace("  auth:\n", hosts + "  auth:\n", 1))
    async with running_gateway(cfg) as g:
        base = f"http://127.0.0.1:{g.gw.admin_addr[1]}"

        async def status(host: str) -> int:
            async with ClientSession() as s, s.get(base + "/metrics",
                                                    headers={"Host": host}) as r:
                return r.status

        assert await status("rebind.attacker.example:8081") == 421, where
        for host in ["localhost:8081", "127.0.0.1:8081", "[::1]:8081", "10.0.2.7:8081",
                     *names]:
            assert await status(host) == 200, (where, host)
