"""A refused reload is read again by itself (hostile GitOps review): what refused the file
may not be the file. A commit that moves admin auth to a key file mounted apart (a Secret
volume, which the kubelet updates on its own schedule, not with the ConfigMap) is refused
while the key file is not there yet; once it is, nothing read the unchanged config again:
the instance kept its old config (and KillgateConfigRefused paged) while siblings that
reloaded a moment later ran the new one, until someone sent SIGHUP."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.configsettle import path_ident
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_admin_key_rotation import NEW_SECRET, _status_with, _write_secret

pytestmark = pytest.mark.timeout(30)


async def test_a_file_refused_for_a_key_file_not_there_yet_goes_live_once_it_is(
        tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    keys = tmp_path / "secrets"  # (another folder: nothing the config watcher sees)
    keys.mkdir()
    cfg = write_config(tmp_path, two_versions(p, p), extra="server: {reload_debounce: 50ms}\n")
    nxt = cfg.read_text().replace("hs256_secret_env: KILLGATE_TEST_SECRET",
                                  f"hs256_secret_file: {keys}/jwt.secret")
    async with running_gateway(cfg) as g, ClientSession() as s:
        g.gw.watcher.retry_first = g.gw.watcher.retry_max = 0.2  # (5 s to 60 s in production)
        old = g.gw.loaded.digest
        tmp = cfg.with_name("next.yaml")
        tmp.write_text(nxt)
        tmp.chmod(0o600)
        tmp.replace(cfg)  # the ConfigMap's update first
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None, 10,
                         what="the refusal: no key file yet")
        assert "admin.auth" in g.gw.watcher.outcome.last_error
        w = g.gw.watcher
        # the passes the change itself causes are done (the 1 s stat poll's included): from
        # here only a retry reads the file again
        await wait_until(lambda: w._seen == path_ident(cfg) and not w._dirty.is_set()
                         and not w._queued and not w._lock.locked(), 5, what="quiet")
        refused = g.gw.metrics.get("killgate_config_reload_rejected_total")
        _write_secret(keys / "jwt.secret", NEW_SECRET)  # the Secret's, a moment later
        # before the fix: refused for good (the file unchanged, read again only by SIGHUP)
        await wait_until(lambda: g.gw.loaded.digest != old
                         and g.gw.watcher.outcome.last_error is None, 5,
                         what="the file read again and applied")
        assert await _status_with(s, g.admin, NEW_SECRET) == 200
        assert g.gw.metrics.get("killgate_config_refused") == 0
        # each retry of the same refusal was not counted as another refused reload
        assert g.gw.metrics.get("killgate_config_reload_rejected_total") == refused
