"""Audit retention cut short by a crash (SIGKILL, a power loss) on the local store: the
files are written as the trim leaves them at that point, then a store starts on them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.audit import seal
from gateway.domain.retention import Retention, TrimWindow, decide_trim
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_audit_retention import _fill, _state, _verify

pytestmark = pytest.mark.timeout(30)


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def _line(ev: dict) -> bytes:
    return (json.dumps(ev, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


async def test_a_trim_a_crash_cut_short_is_undone_at_start_and_a_stale_link_removed(
        tmp_path: Path, backends, caplog: pytest.LogCaptureFixture) -> None:
    """Killed between the trim's rename of the audit file and its state write: the trail
    was trimmed, its checkpoint anchored by no state (`audit verify`: "added without the
    signing key", a false tamper alarm), and the link holding the old trail was left. The
    next start puts the old trail back; a link left after a trim that did land (the state
    anchors its checkpoint) is removed, the trail left as it is."""
    caplog.set_level(logging.INFO, "killgate")
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, None))
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
        store = g.gw.sync.store
        before = await store.audit_events()
        head = await store.audit_head()
        assert head == before[-1]["hash"]
        d = decide_trim(TrimWindow.whole(before, head), store.audit_keys.keys(),
                        Retention(max_events=100), 0.0)
        assert d.draft is not None and d.remove > 0, d
        key = store.audit_keys.current
        ck = seal(d.draft.as_event(), head, (key.kid, key.secret))
    audit: Path = store.audit_path
    data = _bytes(audit)
    lines = data.splitlines(keepends=True)
    # as the trim leaves the files: the old trail linked aside, the kept one renamed in,
    # the state file not yet written
    old = audit.with_name(f".{audit.name}.4242.0123456789ab.tmp.old")
    os.link(audit, old)  # (the trail in place itself: the state anchors its newest)
    kept = audit.with_name(f".{audit.name}.4242.0123456789ab.tmp")
    kept.write_bytes(b"".join(lines[d.remove:]) + _line(ck))
    os.replace(kept, audit)
    async with running_gateway(cfg) as g:
        assert _bytes(audit).startswith(data)  # (what the start wrote follows)
        assert not old.exists()
        assert [r for r in caplog.records if r.getMessage() == "audit_trim_undone"]
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr
        # a trim that landed, killed before it removed its link: the link is stale
        _, got = await g.gw.sync.retention.trim_once()
        assert got is not None
        trimmed = _bytes(audit)
    os.link(audit, old)  # (the trail in place itself: the state anchors its newest)
    stale = audit.with_name(f".{audit.name}.4243.0123456789ab.tmp.old")
    stale.write_bytes(data)  # (an older trail, whose newest event the state no longer anchors)
    caplog.clear()
    async with running_gateway(cfg) as g:
        assert _bytes(audit).startswith(trimmed)
        assert not old.exists() and not stale.exists()
        assert not [r for r in caplog.records if r.getMessage() == "audit_trim_undone"]
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "starts at a trim checkpoint" in res.stdout, res.stdout


async def test_a_trail_re_seeded_after_a_loss_is_trimmed_and_the_loss_stays_said(
        tmp_path: Path, backends, redis_server: Any) -> None:
    """A store that lost its trail (FLUSHALL) is re-seeded: the trail starts at the
    re-seed, after the head the instance had anchored, and `audit verify` reports the
    loss. Retention refused every look from then on (`audit_trim_refused` every hour:
    its oldest event does not start the chain) and nothing said how to get out. It now
    starts there, as after a checkpoint: the loss is reported until the re-seed is past
    the bounds, then removed as any event, and the checkpoints say it happened."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis_server))
    async with running_gateway(cfg) as g:
        await _fill(g, 3)
        redis_server.cmd("FLUSHALL")
        await wait_until(lambda: g.gw.sync.trail_lost is not None
                         and redis_server.cmd("EXISTS", "kgtest:state") == "1", 10,
                         what="the re-seed")
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 1 and "were lost" in res.stderr, res.stdout + res.stderr
        await _fill(g, 125)
        events = await g.gw.sync.store.audit_events()
        assert events[0]["action"] == "state.reseed", events[0]
        decision, ck = await g.gw.sync.retention.trim_once()
        assert ck is not None, decision
        assert ck["after"]["starts_after"]["lost_before"] == events[0]["prev_hash"], ck
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "before them the store had lost its trail" in res.stdout, res.stdout
        # the next checkpoint still says so
        await _fill(g, 20)
        decision, ck = await g.gw.sync.retention.trim_once(going_on=True)
        assert ck is not None, decision
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0 and "had lost its trail" in res.stdout, res.stdout
