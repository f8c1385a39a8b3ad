"""A restart with another state key (KILLGATE_STATE_KEY regenerated, or rotated without
`state.previous_signing_key_env`) refuses the store's document and the instance's own
snapshot, signed with the old key; `killgate status` said of that "something wrote to the
store without the signing key", which reads as an intruder at 3 a.m. (review as a new user,
restarting `config/killgate.yaml` in a new shell). It now names the likely cause first.
Real redis-server, real gateways, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.statuswarn import ANOTHER_KEY
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_cli import acli
from tests.test_forgery import stored_doc
from tests.test_killswitch import kill, redis_state, token

pytestmark = pytest.mark.timeout(60)


async def test_a_restart_with_another_state_key_says_the_key_changed(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
    monkeypatch.setenv("KILLGATE_TEST_STATE_KEY", "another-state-key-0123456789-abcdefghij")
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:read")}

        async def said() -> str | None:
            res = await acli("status", env=env)
            return res.stdout if "UNVERIFIED" in res.stdout else None

        text = await wait_until(said, 10, 0.1, what="status to say UNVERIFIED")
        line = next(x for x in text.splitlines() if x.startswith("UNVERIFIED"))
        assert "signed with an unknown key id" in line, line
        assert ANOTHER_KEY in line, line
        assert "something wrote to the store without the signing key" not in line, line


async def test_a_forgery_naming_a_made_up_key_id_is_not_cleared_as_a_key_change(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """Found by review: anyone who can write to the store names whatever key id a forged
    value carries; one naming a made-up id read "signed with another state key ... the key
    was changed", the words of a benign restart, and an operator at 3 a.m. let a forgery
    pass. The line names this instance's key id and says how to tell, and TAMPERING."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        gen = g.gw.holder.doc.generation
        relaxed = {**stored_doc(redis_server), "generation": gen + 1, "kills": {}}
        forged = f"KGS1 0badc0de {'0' * 64}\n" + json.dumps(relaxed)
        redis_server.cmd("PUBLISH", "kgtest:events", forged)
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:read")}

        async def said() -> str | None:
            res = await acli("status", env=env)
            return res.stdout if "UNVERIFIED" in res.stdout else None

        text = await wait_until(said, 10, 0.1, what="status to say UNVERIFIED")
        line = next(x for x in text.splitlines() if x.startswith("UNVERIFIED"))
        ours = g.gw.sync.status()["verification"]["key_id"]
        assert "'0badc0de'" in line and f"'{ours}'" in line, line
        assert "someone wrote it without the key" in line and "TAMPERING" in line, line
        assert g.gw.holder.doc.generation == gen and g.gw.holder.doc.kills  # (refused)


async def test_a_made_up_key_id_after_a_wrong_signature_does_not_hide_it(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """Found by review: /v1/status and the UNVERIFIED line showed only the LAST refusal, so
    a forger followed a wrong-MAC write under our key id (proof of a writer without the
    key) with a value naming a made-up key id (which reads as a key change too) and the
    stronger evidence was gone. Each cause is counted apart, its latest kept, and the line
    says both. Real redis writes of each kind (and one with a malformed signature line)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        gen = g.gw.holder.doc.generation
        ours = g.gw.sync.status()["verification"]["key_id"]
        body = json.dumps({**stored_doc(redis_server), "generation": gen + 1, "kills": {}})
        for forged in (f"KGS1 {ours} {'0' * 64}\n{body}", f"KGS1 {ours}\n{body}",
                       f"KGS1 0badc0de {'0' * 64}\n{body}"):
            redis_server.cmd("PUBLISH", "kgtest:events", forged)
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:read")}

        async def said() -> str | None:
            res = await acli("status", env=env)
            return res.stdout if "unknown key id 1" in res.stdout else None

        text = await wait_until(said, 10, 0.1, what="status to count the three refusals")
        ver = g.gw.sync.status()["verification"]
        assert ver["by_cause"] == {"bad_signature": 1, "other": 1, "unknown_key_id": 1}, ver
        assert "does not match" in ver["last_by_cause"]["bad_signature"]["problem"], ver
        assert "malformed" in ver["last_by_cause"]["other"]["problem"], ver
        assert "'0badc0de'" in ver["last_by_cause"]["unknown_key_id"]["problem"], ver
        assert ver["last_unverified"]["cause"] == "unknown_key_id", ver
        line = next(x for x in text.splitlines() if x.startswith("UNVERIFIED"))
        assert ("wrong signature 1, last: push: its signature does not match its content"
                in line), line
        assert "other 1, last: push: its signature line is malformed" in line, line
        assert "something wrote to the store without the signing key" in line, line
        assert "'0badc0de'" in line and "TAMPERING" in line, line
        assert g.gw.holder.doc.generation == gen and g.gw.holder.doc.kills  # (refused)
