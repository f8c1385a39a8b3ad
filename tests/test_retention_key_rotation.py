"""Audit retention after the audit key is rotated (found by review revfalse2, left as a
strict xfail, fixed by impretkey): the trail's start is the newest trim checkpoint, MAC'd
with the key in use when it was written; once a rotation removed that key (step 3; by
default the audit key is the signing key), every later trim was refused,
`audit_trim_refused` "the newest trim checkpoint ... does not verify under the audit key",
hourly, and the trail grew without bound. A checkpoint is still never taken on its hash
alone (one made up under a key id nobody holds would let a trim hide a deletion): the
chain after it must link and recompute up to an event a held key authenticates
(domain/auditpin.py). Tampering across the rotation (an event deleted or edited before the
new checkpoint) is still refused by the trim and found by `killgate audit verify`.

Both stores: a real redis-server, the local files; in-process gateways (the code of
`killgate serve`); the real CLI.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_audit import TOKEN, _write_events
from tests.test_audit_retention import _fill, _state
from tests.test_cli import cli

pytestmark = pytest.mark.timeout(60)

OLD = "  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
STEP2 = "  signing_key_env: KG_NEW_KEY\n  previous_signing_key_env: KILLGATE_TEST_STATE_KEY\n"
NEW = "  signing_key_env: KG_NEW_KEY\n"


def _verify_new(admin: str) -> subprocess.CompletedProcess[str]:
    return cli("audit", "verify", "--admin", admin, "--token", TOKEN, "--key-env", "KG_NEW_KEY")


async def _rotated(tmp_path: Path, backends: Any, request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch, backend: str) -> tuple[Any, Any]:
    """A trail trimmed under the old key (its checkpoint, then 3 more old-key events), the
    3 rotation steps run; the step-3 config and the redis-server (None: local)."""
    monkeypatch.setenv("KG_NEW_KEY", "n" * 64)
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None

    def cfg(name: str, keys: str) -> Path:
        (tmp_path / name).mkdir()
        return write_config(tmp_path / name, two_versions(p, p),
                            state=_state(tmp_path, redis).replace(OLD, keys))

    async with running_gateway(cfg("s0", OLD)) as g:
        await _fill(g, 125)
        decision, ck = await g.gw.sync.retention.trim_once()
        assert ck is not None, decision
        await _fill(g, 3)  # (old-key events after the checkpoint: the chain pins it)
    async with running_gateway(cfg("s2", STEP2)) as g:
        await _fill(g, 5)  # (a write re-signs the state)
    return cfg("s3", NEW), redis


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_retention_trims_after_the_audit_key_rotated(
        tmp_path: Path, backends, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    step3, _ = await _rotated(tmp_path, backends, request, monkeypatch, backend)
    async with running_gateway(step3) as g:
        await _fill(g, 30)
        decision, ck = await g.gw.sync.retention.trim_once()
        assert not decision.broken, decision
        assert ck is not None and decision.remove > 0, decision
        assert g.gw.sync.retention.refused is None
        res = await asyncio.to_thread(_verify_new, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_tampering_across_the_rotation_is_still_caught(
        tmp_path: Path, backends, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    step3, redis = await _rotated(tmp_path, backends, request, monkeypatch, backend)
    async with running_gateway(step3) as g:
        await _fill(g, 30)
        store = g.gw.sync.store
        events = await store.audit_events()
        at = max(i for i, e in enumerate(events) if e.get("action") == "audit.trim")
        old_kid = events[at]["kid"]
        assert events[at + 1]["kid"] == old_kid != events[-1]["kid"]
        res = await asyncio.to_thread(_verify_new, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr
        edited = {**events[at + 2], "reason": "nothing to see"}
        forged_ck = {**events[at], "after": {**events[at]["after"], "removed": 1}}
        for name, tampered in [
                ("an old-key event after the checkpoint deleted", [*events[:at + 1],
                                                                   *events[at + 2:]]),
                ("one edited", [*events[:at + 2], edited, *events[at + 3:]]),
                ("the checkpoint edited", [*events[:at], forged_ck, *events[at + 1:]]),
                ("an event before the checkpoint deleted", [*events[:5], *events[6:]])]:
            await _write_events(store, tmp_path, redis, tampered)
            decision, none = await g.gw.sync.retention.trim_once()
            assert none is None and decision.broken, (name, decision)
            res = await asyncio.to_thread(_verify_new, g.admin)
            assert res.returncode == 1, (name, res.stdout + res.stderr)
            await _write_events(store, tmp_path, redis, events)
        decision, ck = await g.gw.sync.retention.trim_once()
        assert ck is not None and decision.remove > 0, decision
