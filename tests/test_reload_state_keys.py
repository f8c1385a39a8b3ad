"""A reload whose `state` keys cannot be read is refused, as `killgate check` refuses the
file (ninth hostile review): the state settings apply at a restart only, so the reload went
live (restart_required: state), its bytes became the group's (workerconfig.py), and the
next worker restarted after a crash, or the next start, could not build its keyring."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(30)


def _write_next(g: Any, tmp_path: Path, cfg: Path, p: int, state: str) -> str:
    """Write the file the next reload reads (the weights changed, and `state`); returns
    the digest of the config running before."""
    old: str = g.gw.loaded.digest
    cfg.write_text(write_config(tmp_path, two_versions(p, p, 50, 50), state=state,
                                name="next.yaml").read_text())
    return old


async def _reload_refused(g: Any, old: str) -> str:
    """Reload; the config of digest `old` must stay running. Returns the reload's error."""
    watcher = g.gw.watcher
    assert watcher is not None
    g.gw.request_reload()
    await wait_until(lambda: g.gw.loaded.digest != old or watcher.outcome.last_error, 10)
    assert g.gw.loaded.digest == old, watcher.outcome.restart_required
    return watcher.outcome.last_error or ""


async def test_a_reload_with_an_unreadable_state_key_keeps_the_running_config(
        tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)
    cfg = write_config(tmp_path, routes)
    bad_state = textwrap.dedent(f"""\
        state:
          backend: local
          path: {tmp_path}/store.json
          snapshot_path: {tmp_path}/snapshot.json
          poll_interval: 50ms
          signing_key_file: {tmp_path}/missing.key
        """)
    async with running_gateway(cfg) as g:
        old = _write_next(g, tmp_path, cfg, p, bad_state)
        check = await asyncio.to_thread(  # (forked: tests/cli_fork.py)
            cli_fork.run, ["check", str(cfg)], dict(os.environ), os.getcwd(), 30)
        assert check.returncode == 1 and "state.signing_key_file" in check.stderr
        error = await _reload_refused(g, old)
        assert "state.signing_key_file" in error
        assert "stays in force" in error


@pytest.mark.parametrize("bad", ["snapshot_path: {fifo}", "audit_mirror: {tmp}/var"])
async def test_a_reload_naming_a_state_file_start_refuses_keeps_the_running_config(
        tmp_path: Path, backends, bad: str) -> None:
    """A reload naming a state file `check` and the start refuse (a FIFO, a folder) went
    live (restart_required: state); the next start refused the file it had put live."""
    import os

    os.mkfifo(tmp_path / "snap.fifo")
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    (tmp_path / "var").mkdir()
    state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n  "
             + bad.format(fifo=tmp_path / "snap.fifo", tmp=tmp_path) + "\n")
    async with running_gateway(cfg) as g:
        error = await _reload_refused(g, _write_next(g, tmp_path, cfg, p, state))
        assert "folder, device, FIFO" in error
        assert "stays in force" in error
