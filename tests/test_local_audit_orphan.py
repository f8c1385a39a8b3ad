"""The file store appends a change's audit event before it writes the state file that
anchors it. When that write fails (a full disk, a folder that refuses new files), the
change was not made, but its event stayed: past the anchored head, which `audit verify`
and the console call events "added to the store by someone without the signing key".

A real gateway on the file store; the state file's folder is made immutable (chattr +i:
appending to the existing audit file still works, creating the state file's temporary
copy does not), as a full disk refuses the state file's copy.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_keyed_audit import H, verify

pytestmark = pytest.mark.timeout(60)


def _chattr(flag: str, folder: Path) -> int:
    return subprocess.run(["chattr", flag, str(folder)], capture_output=True,
                          timeout=10).returncode


async def test_a_change_whose_state_write_failed_leaves_no_event_past_the_head(
        tmp_path: Path, backends, session) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    p = await backends(echo_app("v1"))
    state = (f"state:\n  backend: local\n  path: {folder}/store.json\n"
             f"  snapshot_path: {tmp_path}/snapshot.json\n  poll_interval: 50ms\n")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    kill = {"scope": "route", "route": "iris", "reason": "r"}
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=H, json=kill) as r:
            assert r.status == 200, await r.text()
        if await asyncio.to_thread(_chattr, "+i", folder):
            pytest.skip("chattr +i is not available here (root on ext4 is needed)")
        try:
            async with session.post(g.admin + "/v1/unkill", headers=H, json=kill) as r:
                assert r.status == 503, await r.text()
        finally:
            assert await asyncio.to_thread(_chattr, "-i", folder) == 0
        async with session.get(g.admin + "/v1/audit?limit=3", headers=H) as r:
            page = await r.json()
        assert page["events"][0]["action"] == "kill", page
        assert page["events"][0]["hash"] == page["head"], page
        res = await asyncio.to_thread(verify, g.admin)
        assert res.returncode == 0, res.stderr
        async with session.post(g.admin + "/v1/unkill", headers=H, json=kill) as r:
            assert r.status == 200, await r.text()  # (and the next change goes on from it)
        res = await asyncio.to_thread(verify, g.admin)
        assert res.returncode == 0, res.stderr
