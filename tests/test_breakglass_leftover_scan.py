"""A break-glass use a dead process left is never dropped unsaid, nor counted twice
(review revmerge38 of impdrill8's glassjournal).

A starting process counts the uses a dead process left (files beside the snapshot naming
audit event ids) whose events the trail holds; one not found was taken as not applied and
its file dropped, silently. But the trail is read back MAX_SCAN events at most: after more
events than that since the use (a fleet's writes, denied calls of a flood while the
instance was down), its event was not found and a use that was applied went uncounted with
no line said. Now a read that stopped short of the use's time says so (WARNING
break_glass_unresolved, with its audit id). And two files naming one event (a copy, a
process killed between its count and the file's removal) counted the use twice; an id is
now counted once. Real `killgate serve` on a real redis-server making the events; the
start's reconcile run here on the same store, MAX_SCAN made small (the trail's length
is what matters, not 4096 writes' time).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.admin import glassjournal
from gateway.admin.glassjournal import Journal
from gateway.log import _FIELDS
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    admin_token,
    running_gateway,
    two_versions,
    write_config,
)
from tests.staterig import store_on
from tests.test_admin_approvals import APPROVALS
from tests.test_revops_fleet import _state

pytestmark = pytest.mark.timeout(60)
GLASS = "killgate:kill killgate:read killgate:breakglass"


async def _uses(session: ClientSession, admin: str, n: int) -> list[str]:
    """`n` global kills each lifted by a break-glass unkill: the unkills' audit ids."""
    auth = {"Authorization": f"Bearer {admin_token(GLASS, 'alice')}"}
    ids = []
    for i in range(n):
        async with session.post(admin + "/v1/kill", headers=auth,
                                json={"scope": "global", "reason": f"k{i}"}) as r:
            assert r.status == 200, await r.text()
        async with session.post(admin + "/v1/unkill", headers=auth, json={
                "scope": "global", "reason": f"u{i}", "break_glass": True}) as r:
            assert r.status == 200, await r.text()
            ids.append((await r.json())["audit_id"])
    return ids


def _this_boot() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _leave(folder: Path, name: str, eid: str, **more: Any) -> None:
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(
        {"id": eid, "time": time.time(), "glass": {"action": "unkill", "actor": "alice"},
         **more}))


async def test_a_use_beyond_the_scan_is_said_and_one_named_twice_counted_once(
        tmp_path: Path, backends, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
        session: ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(redis_server, tmp_path),
                       extra=APPROVALS)
    async with running_gateway(cfg, "inst-glass") as g:
        ids = await _uses(session, g.admin, 5)  # (10 events: the first use is the 9th
        # newest, past a scan of 8)
    store = store_on(redis_server, "revops")
    await store.open()
    counted: list[dict[str, Any]] = []
    try:
        folder = tmp_path / "left.glass"
        _leave(folder, f"999999-{ids[0]}", ids[0])
        monkeypatch.setattr(glassjournal, "MAX_SCAN", 8)
        with caplog.at_level(logging.WARNING, "killgate.admin"):
            await Journal(folder).reconcile(store, lambda glass, _: counted.append(glass))
        said = [str(getattr(r, _FIELDS, "")) for r in caplog.records
                if r.getMessage() == "break_glass_unresolved"]
        assert len(said) == 1 and ids[0] in said[0], said
        assert counted == [] and list(folder.glob("*-*.json")) == []
        monkeypatch.undo()
        caplog.clear()
        # two files naming one use: counted once
        _leave(folder, f"999998-{ids[-1]}", ids[-1])
        _leave(folder, f"999997-{ids[-1]}-copy", ids[-1])
        await Journal(folder).reconcile(store, lambda glass, _: counted.append(glass))
        assert len(counted) == 1, counted
        assert list(folder.glob("*-*.json")) == []
    finally:
        await store.close()


async def test_a_use_left_before_a_reboot_is_counted_though_its_pid_runs(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    """A node restarted: the pids the files name are other processes' now (pid 1 here,
    which runs, another user's maybe). Skipped as "a running sibling's use", such a file
    was never taken, the use never counted, and nothing said so. A file written before
    this boot (its `boot`) is now taken; one of this boot, of a process that runs, is not."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(redis_server, tmp_path),
                       extra=APPROVALS)
    async with running_gateway(cfg, "inst-glass") as g:
        (eid,) = await _uses(session, g.admin, 1)
    store = store_on(redis_server, "revops")
    await store.open()
    counted: list[dict[str, Any]] = []
    folder = tmp_path / "left.glass"
    try:
        boot = _this_boot()
        _leave(folder, f"1-{eid}-live", eid, pid=1, boot=boot)  # (this boot's: runs)
        await Journal(folder).reconcile(store, lambda glass, _: counted.append(glass))
        assert counted == [] and len(list(folder.glob("*-*.json"))) == 1
        (folder / f"1-{eid}-live.json").unlink()
        _leave(folder, f"1-{eid}", eid, pid=1, boot="an-earlier-boot")
        await Journal(folder).reconcile(store, lambda glass, _: counted.append(glass))
        assert len(counted) == 1 and list(folder.glob("*-*.json")) == [], counted
    finally:
        await store.close()
