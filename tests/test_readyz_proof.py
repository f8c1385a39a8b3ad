"""An instance proves to a drill, on /readyz, the generation it runs (domain/readyzproof.py).

Whoever can write the store without the signing key can put back an old signed heartbeat
whose admin address their own process listens on, and answer the drill's question there
with "behind": every drill failed (a stated denial of service). The drill's open answer now
carries `readyz_keys` (derived from the state signing key for that drill, never stored);
`/readyz?drill=ID&nonce=N` answers with a `proof` only a holder of the state key can make.
A real in-process gateway on a real redis; real HTTP.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.domain.readyzproof import verified
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, write_config
from tests.drillrig import call, hdr, routes
from tests.test_revops_fleet import _state

pytestmark = pytest.mark.timeout(30)


async def _ready(session: ClientSession, admin: str, **query: str) -> tuple[int, dict]:
    async with session.get(f"{admin}/readyz", params=query) as r:
        return r.status, await r.json()


async def test_readyz_proves_instance_and_generation_to_the_drill_that_asks(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2), state=_state(redis_server, tmp_path))
    async with running_gateway(cfg, "inst-a") as g:
        key = "drill-open-key-1"
        body = {"kind": "kill", "route": "iris-drill", "version": "v2", "reason": "r"}
        st, opened = await call(session, "POST", f"{g.admin}/v1/drills", body,
                                {**hdr(), "idempotency-key": key})
        assert st == 200, opened
        drill, keys = opened["drill"], opened["readyz_keys"]
        assert isinstance(keys, dict) and len(keys) == 1, keys
        # a replayed answer derives them again; the stored record never holds them
        st, again = await call(session, "POST", f"{g.admin}/v1/drills", body,
                               {**hdr(), "idempotency-key": key})
        assert st == 200 and again["drill"] == drill and again["readyz_keys"] == keys, again
        secret = next(iter(keys.values()))
        names = [x for x in redis_server.cmd("KEYS", "*").split("\r\n")[1:]
                 if x and not x.startswith("$")]
        read = {"string": ("GET",), "hash": ("HGETALL",), "stream": ("XRANGE", "-", "+"),
                "list": ("LRANGE", "0", "-1"), "zset": ("ZRANGE", "0", "-1")}
        assert names
        for name in names:
            kind = redis_server.cmd("TYPE", name)
            if kind in read:
                cmd, *rest = read[kind]
                assert secret not in redis_server.cmd(cmd, name, *rest), name

        nonce = secrets.token_urlsafe(18)
        st, doc = await _ready(session, g.admin, drill=drill, nonce=nonce)
        assert st == 200 and doc["instance"] == "inst-a", doc
        assert verified(keys, doc, nonce)
        assert not verified(keys, doc, secrets.token_urlsafe(18))  # (another question's)
        assert not verified(keys, {**doc, "generation": doc["generation"] - 1}, nonce)
        assert not verified(keys, {**doc, "instance": "inst-b"}, nonce)
        # another drill's keys prove nothing here
        st, other = await _ready(session, g.admin, drill="d-other-1", nonce=nonce)
        assert not verified(keys, other, nonce)
        # a probe's plain question is answered as before
        st, plain = await _ready(session, g.admin)
        assert st == 200 and "proof" not in plain and plain["instance"] == "inst-a"


@pytest.mark.parametrize("query", [
    {"drill": "d-1"},  # (no nonce)
    {"nonce": "a" * 20},  # (no drill)
    {"drill": "d-1", "nonce": "short"},
    {"drill": "d 1/..", "nonce": "a" * 20},
    {"drill": "d-1", "nonce": "a" * 65},
    {"drill": "d-1", "nonce": "a" * 19 + "="},
])
async def test_a_malformed_question_is_a_400_that_changes_nothing(
        tmp_path: Path, backends, session: ClientSession, query: dict[str, str]) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        before = (await _ready(session, g.admin))[1]["generation"]
        async with session.get(f"{g.admin}/readyz", params=query) as r:
            assert r.status == 400, await r.text()
            err = (await r.json())["error"]
        assert err["type"] == "bad_request" and ("drill" in err["message"]
                                                 or "nonce" in err["message"]), err
        assert (await _ready(session, g.admin))[1]["generation"] == before
