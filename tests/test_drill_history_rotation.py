"""The drill history after the audit key is rotated (found with revfalse2's retention
finding, fixed by impretkey): `drill_events` keeps only events whose MAC verifies under a
key held, so once a rotation removed the old key (step 3), every drill from before it
vanished from GET /v1/drills's history (and from what a restore or an end reads of a
drill). Such an event is now shown when the chain authenticates it (each event from a newer
genuine one back to it links and recomputes), marked `"verified_by": "chain"`; one edited
since, or appended without the key, is still dropped.

Both stores: a real redis-server, the local files; in-process gateways (`killgate serve`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.admin.drillsupport import drill_events
from gateway.domain.audit import AuditDraft, seal
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_audit import H, _write_events
from tests.test_audit_retention import _fill, _state
from tests.test_retention_key_rotation import NEW, OLD, STEP2

pytestmark = pytest.mark.timeout(60)


def _ended(drill: str) -> AuditDraft:
    return AuditDraft(actor="alice", action="drill.end", target={"drill": drill},
                      reason="game day", after={"verdict": "passed"}, extra={"drill": drill})


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_drills_from_before_a_rotation_stay_in_the_history(
        tmp_path: Path, backends, session, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("KG_NEW_KEY", "n" * 64)
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None

    def cfg(name: str, keys: str) -> Path:
        (tmp_path / name).mkdir()
        return write_config(tmp_path / name, two_versions(p, p),
                            state=_state(tmp_path, redis).replace(OLD, keys))

    async with running_gateway(cfg("s0", OLD)) as g:
        await g.gw.sync.append_audit(_ended("d-old"))
        await _fill(g, 3)
    async with running_gateway(cfg("s2", STEP2)) as g:
        await _fill(g, 2)
    async with running_gateway(cfg("s3", NEW)) as g:
        await g.gw.sync.append_audit(_ended("d-new"))
        await _fill(g, 2)
        async with session.get(g.admin + "/v1/drills", headers=H) as r:
            assert r.status == 200
            history = (await r.json())["history"]
        assert [e["target"]["drill"] for e in history] == ["d-new", "d-old"], history
        assert "verified_by" not in history[0] and history[1]["verified_by"] == "chain"
        store = g.gw.sync.store
        assert [e["target"]["drill"] for e in await drill_events(
            store, lambda e: e.get("drill") == "d-old", 5)] == ["d-old"]
        events = await store.audit_events()
        at = next(i for i, e in enumerate(events) if e.get("drill") == "d-old")
        # edited since (its hash no longer recomputes): dropped
        edited = {**events[at], "after": {"verdict": "failed"}}
        await _write_events(store, tmp_path, redis, [*events[:at], edited, *events[at + 1:]])
        assert await drill_events(store, lambda e: e.get("action") == "drill.end", 5) == [
            e for e in history if e["target"]["drill"] == "d-new"]
        # a drill made up under the retired key id, its chain link to the next event
        # rewritten too: the link breaks at the next genuine event's prev_hash
        fake = seal({**_ended("d-fake").as_event(), "kid": events[at]["kid"]},
                    events[at]["prev_hash"], (events[at]["kid"], b"x" * 32))
        await _write_events(store, tmp_path, redis, [*events[:at], fake, *events[at + 1:]])
        got = await drill_events(store, lambda e: e.get("action") == "drill.end", 5)
        assert [e["target"]["drill"] for e in got] == ["d-new"], got
