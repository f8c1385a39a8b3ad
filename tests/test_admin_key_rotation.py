"""Rotating the admin token key without touching the config: a leaked key must stop working.

The usual response to a leaked admin secret (or a compromised signing key behind
`public_key_file`) is to write a new key into the same file and reload. The config file
itself does not change, so its digest does not either: the gateway once kept verifying
tokens with the key it had read at start until it was restarted, and said nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import ClientSession

from gateway.admin.tokens import mint
from tests.backends import echo_app
from tests.configmap import ConfigMapVolume
from tests.conftest import SECRET, free_port, running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(60)

NEW_SECRET = "rotated-secret-0123456789-abcdefghijklmnop"


def _write_secret(path: Path, secret: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(secret)
    tmp.chmod(0o600)
    os.replace(tmp, path)


async def _status_with(s: ClientSession, admin: str, secret: str) -> int:
    tok = mint(secret, "ops", "killgate:read", 60, "killgate", "killgate-admin")
    async with s.get(admin + "/v1/status", headers={"Authorization": f"Bearer {tok}"}) as r:
        return r.status


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_rotated_secret_file_takes_effect_at_sighup(tmp_path: Path, backends,
                                                           gateway_procs, workers: int) -> None:
    p = await backends(echo_app("v1"))
    key = tmp_path / "jwt.secret"
    _write_secret(key, SECRET)
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra="server: {watch_config: false}\n",
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    cfg.write_text(cfg.read_text().replace("hs256_secret_env: KILLGATE_TEST_SECRET",
                                           "hs256_secret_file: jwt.secret"))
    gw = gateway_procs(cfg, workers=workers)  # 2: the supervisor forwards it to each
    await asyncio.to_thread(gw.wait_ready)
    # a fresh connection per request: SO_REUSEPORT spreads them over the workers
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        assert await _status_with(s, gw.admin, SECRET) == 200  # (now in the verified cache)
        _write_secret(key, NEW_SECRET)
        gw.signal(signal.SIGHUP)

        async def rotated() -> bool:  # 20 in a row: every worker has the new key
            for _ in range(20):
                if (await _status_with(s, gw.admin, NEW_SECRET) != 200
                        or await _status_with(s, gw.admin, SECRET) != 401):
                    return False
            return True

        await wait_until(rotated, 10, 0.05, "the new key in force after SIGHUP")
    assert "admin_auth_key_reloaded" in gw.output()
    assert gw.stop() == 0, gw.output()


async def test_a_key_rotated_alone_in_a_configmap_update_takes_effect(tmp_path: Path,
                                                                      backends) -> None:
    """The kubelet swaps the whole folder: only `jwt.secret` differs, the config does not."""
    p = await backends(echo_app("v1"))
    var = tmp_path / "var"
    var.mkdir()
    text = write_config(var, two_versions(p, p), extra="server: {reload_debounce: 50ms}\n",
                        name="src.yaml").read_text().replace(
        "hs256_secret_env: KILLGATE_TEST_SECRET", "hs256_secret_file: jwt.secret")
    vol = ConfigMapVolume(tmp_path / "cm", {"killgate.yaml": text, "jwt.secret": SECRET},
                          mode=0o400)
    async with running_gateway(vol.path("killgate.yaml")) as g, ClientSession() as s:
        assert await _status_with(s, g.admin, SECRET) == 200
        for _ in vol.update({"killgate.yaml": text, "jwt.secret": NEW_SECRET}):
            pass

        async def rotated() -> bool:
            return await _status_with(s, g.admin, NEW_SECRET) == 200

        await wait_until(rotated, 10, 0.05, "the new key in force after the update")
        assert await _status_with(s, g.admin, SECRET) == 401
        assert g.gw.watcher.outcome.last_error is None
