"""The audit mirror goes on after its audit key is rotated (found by review revfalse2: with
no audit event between step 2 and step 3 of a rotation of `audit_key_env`, the mirror's
last line carries a MAC under the key just removed, and every restart refused it: AUDIT
MIRROR STOPPED, killgate_audit_mirror_ok 0, the alarm webhook, and copying stopped until
the file was moved aside, though nobody touched it). Such a last line is now taken on its
hash: the next event must continue it and verify, so a last line edited (or added) under a
key id nobody holds is still refused, at that event.

Real redis-server, in-process gateways (the code of `killgate serve`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.domain.audit import event_hash
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill, redis_state, unkill

pytestmark = pytest.mark.timeout(40)


async def test_the_mirror_continues_after_its_audit_key_rotated(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_A1", "1" * 64)
    monkeypatch.setenv("KG_A2", "2" * 64)
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "mirror.jsonl"

    def cfg(name: str, keys: str) -> Path:
        (tmp_path / name).mkdir()
        state = redis_state(redis_server, tmp_path, "a",
                            extra=f"  audit_mirror: {mirror}\n" + keys)
        return write_config(tmp_path / name, two_versions(p, p, 100, 0), state=state)

    async with running_gateway(cfg("s0", "  audit_key_env: KG_A1\n"), "gw") as g:
        await kill(session, g.admin, scope="route", route="iris")
        await wait_until(lambda: g.gw.sync.mirror.copied >= 1, 5, what="mirrored")
    step2 = cfg("s2", "  audit_key_env: KG_A2\n  previous_audit_key_env: KG_A1\n")
    async with running_gateway(step2, "gw") as g:
        await wait_until(lambda: g.gw.sync.mirror.last_hash, 5, what="step 2's mirror")
    step3 = cfg("s3", "  audit_key_env: KG_A2\n")
    async with running_gateway(step3, "gw") as g:
        m = g.gw.sync.mirror
        await wait_until(lambda: m.last_hash, 5, what="step 3's mirror")
        assert m.status()["ok"] and m.refused is None, m.status()
        await unkill(session, g.admin, scope="route", route="iris")
        await wait_until(lambda: m.copied >= 1, 5, what="the next event mirrored")
        assert m.status()["ok"], m.status()
        assert g.gw.metrics.get("killgate_audit_mirror_refused_total", ()) == 0
    # the same last line, edited and named with a key id nobody holds: refused at the next
    lines = mirror.read_bytes().splitlines()
    ev = json.loads(lines[-1])
    ev.update(reason="edited", kid="deadbeef")
    ev["hash"] = event_hash(ev)
    mirror.write_bytes(b"\n".join([*lines[:-1], json.dumps(ev).encode()]) + b"\n")
    async with running_gateway(step3, "gw") as g:
        m = g.gw.sync.mirror
        await wait_until(lambda: m.last_hash, 5, what="the mirror read")
        await kill(session, g.admin, scope="route", route="iris")
        await wait_until(lambda: m.refused, 5, what="the edited end refused")
        assert "continue" in m.refused["problem"], m.refused
