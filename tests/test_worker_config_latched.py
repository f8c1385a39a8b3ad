"""`serve --workers N`: a worker restarted after a crash starts on the config its siblings
serve, which the fleet's latched state accepts (gateway/workerconfig.py): after a reload
that added a version and an override that latched traffic on it, a restart from a copy
that missed the reload (its write-back failed: a full TMPDIR) was refused by the start
check every time, and the slot crash-looped for good."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import wait_until
from tests.test_killswitch import auth
from tests.test_reload import atomic_write
from tests.test_worker_config import _group, _listening
from tests.test_workers import _children

pytestmark = [pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
              pytest.mark.timeout(90)]

ROLLOUT = "killgate:rollout killgate:read"


async def test_a_worker_restarted_after_a_reload_and_an_override_on_a_new_version_serves(
        tmp_path: Path, backends, gateway_procs) -> None:
    g, cfg, _, p2 = await _group(tmp_path, backends, gateway_procs, watch=False)
    p3 = await backends(echo_app("v3"))
    await wait_until(lambda: all(_listening(g.gw.output(), w) for w in _children(g.sup)),
                     15, 0.05, "both workers serving (a SIGHUP reaches each)")
    text = cfg.read_text()
    line = f'- {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}'
    assert line in text
    indent = text.split(line)[0].rsplit("\n", 1)[1]
    atomic_write(cfg, text.replace(
        line, line + f'\n{indent}- {{name: v3, url: "http://127.0.0.1:{p3}", weight: 0}}'))
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        g.gw.signal(signal.SIGHUP)
        await wait_until(lambda: g.gw.output().count("config_reloaded") >= 2, 15, 0.05,
                         "both workers reloading the file with v3")
        async with s.put(g.gw.admin + "/v1/routes/iris/weights?wait=2s", headers=auth(ROLLOUT),
                         json={"weights": {"v3": 100}, "reason": "INC-7"}) as r:
            assert r.status == 200, await r.text()
        await g.until(s, "v3", "the override on v3 in both workers")
        await g.restart_one()  # from the group's copy, which the reload wrote
        assert await g.versions(s) == {"v3": 40}

        # the copy missed the reload (as when its write-back failed): the restarted
        # worker starts from the file the running workers reloaded, not a crash loop
        (shared,) = g.tmp.glob("killgate-workers-*/config")
        shared.write_bytes(text.encode())
        await g.restart_one()
        assert "worker_config_refused" in g.gw.output()
        assert await g.versions(s) == {"v3": 40}
        g.alive()
    assert g.gw.stop() == 0, g.gw.output()


def test_a_copy_that_cannot_be_written_is_removed_not_left_stale(tmp_path: Path) -> None:
    """A write-back that fails (here the file size limit; a full TMPDIR alike) removes the
    old copy, so a worker started later reads the config file itself, as its warning says,
    instead of a copy that missed the reload."""
    shared = tmp_path / "config"
    shared.write_bytes(b"old: bytes\n")
    code = ("import resource, signal, sys\n"
            "from gateway.workerconfig import save\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4, 4))\n"
            f"sys.exit(0 if save({str(shared)!r}, b'new: bytes, longer\\n') else 7)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 7, res
    assert "worker_config_not_saved" in res.stdout + res.stderr, res
    assert not shared.exists()
    assert list(tmp_path.iterdir()) == []  # (nor its temporary file)
