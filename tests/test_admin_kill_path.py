"""What a kill's committer does before its commit leaves (impkill6, counted by
benchmarks/kill_serve_instructions.py): it draws a request id only when the caller names
none, an Idempotency-Key claim's holder only with a key, each as `uuid.uuid4().hex` says
it (version 4) but without building a UUID object (~15k instructions each); the admin
listener's Host check parses a Host it saw last once, not on every request; and a token
verified before is not judged into a principal again (only its times are checked)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import ClientSession

from gateway.admin import auth as auth_mod
from gateway.admin import hosts
from gateway.admin.auth import Authenticator
from gateway.config import AuthConfig
from gateway.config_admin import AdminConfig
from gateway.errors import Unauthenticated
from tests.backends import echo_app
from tests.conftest import SECRET, bearer, running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(30)
ADMIN = {**bearer("killgate:admin", "alice", 3 * 3600), "Content-Type": "application/json"}
KILL = {"scope": "version", "route": "iris", "version": "v2", "reason": "ids"}


def _v4(text: str) -> bool:
    return len(text) == 32 and uuid.UUID(hex=text).version == 4 and uuid.UUID(hex=text).hex == text


async def test_a_kill_draws_its_ids_without_uuid_objects(
        tmp_path: Path, backends: Any, session: ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    made: list[uuid.UUID] = []
    real = uuid.uuid4

    def counted() -> uuid.UUID:
        made.append(real())
        return made[-1]
    async with running_gateway(cfg) as g:
        monkeypatch.setattr(uuid, "uuid4", counted)
        async with session.post(g.admin + "/v1/kill", json=KILL, headers=ADMIN) as r:
            assert r.status == 200, await r.text()
        async with session.post(g.admin + "/v1/unkill", json=KILL,
                                headers={**ADMIN, "X-Request-Id": "ticket-7"}) as r:
            assert r.status == 200, await r.text()
        # (with a key: its claim has a holder, drawn the same way)
        async with session.post(g.admin + "/v1/kill", json=KILL,
                                headers={**ADMIN, "Idempotency-Key": "k-1"}) as r:
            assert r.status == 200, await r.text()
        monkeypatch.setattr(uuid, "uuid4", real)
        events = [e for e in await g.gw.sync.store.audit_events()
                  if e["action"] in ("kill", "unkill")]
    assert made == []  # (two UUID objects a write before)
    assert [e["action"] for e in events] == ["kill", "unkill", "kill"]
    assert _v4(events[0]["request_id"]) and _v4(events[2]["request_id"])
    assert events[0]["request_id"] != events[2]["request_id"]
    assert events[1]["request_id"] == "ticket-7"  # the caller's, when named


def test_the_host_check_parses_a_host_once() -> None:
    admin = AdminConfig(listen="127.0.0.1:8081")
    hosts._name.cache_clear()
    assert hosts.host_allowed("127.0.0.1:8081", admin)
    assert not hosts.host_allowed("evil.example:8081", admin)
    for _ in range(5):
        assert hosts.host_allowed("127.0.0.1:8081", admin)
        assert not hosts.host_allowed("evil.example:8081", admin)
    info = hosts._name.cache_info()
    assert (info.misses, info.hits) == (2, 10)
    # kept for a few values only: a client making up a Host per request does not grow it
    for i in range(1000):
        hosts.host_allowed(f"n{i}.example", admin)
    assert hosts._name.cache_info().currsize <= 32


async def test_a_verified_token_is_not_judged_again_but_still_ages(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILLGATE_JWT_SECRET", SECRET)
    t = int(time.time())  # (jwt.decode checks exp against the real clock)
    now = [float(t)]
    auth = Authenticator(AuthConfig(leeway="0s", max_token_age="1m"), Path,
                         clock=lambda: now[0])
    tok = jwt.encode({"sub": "alice", "scope": "killgate:kill", "iat": t, "exp": t + 600,
                      "iss": "killgate", "aud": "killgate-admin"}, SECRET, algorithm="HS256")
    first = await auth.authenticate(f"Bearer {tok}")
    judged: list[object] = []
    real = auth_mod.principal_of

    def counted(*a: Any) -> object:
        judged.append(a)
        return real(*a)
    monkeypatch.setattr(auth_mod, "principal_of", counted)
    now[0] = t + 30.0
    assert await auth.authenticate(f"Bearer {tok}") is first
    assert judged == []  # (judged again on every call before)
    now[0] = t - 5.0  # the clock stepped back: the token is from the future again
    with pytest.raises(Unauthenticated) as exc:
        await auth.authenticate(f"Bearer {tok}")
    assert exc.value.type != "expired"
    now[0] = t + 61.0  # past admin.auth.max_token_age, long before its exp
    with pytest.raises(Unauthenticated) as exc:
        await auth.authenticate(f"Bearer {tok}")
    assert exc.value.type == "expired"
