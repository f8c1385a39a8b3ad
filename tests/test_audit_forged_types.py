"""Audit entries whose `kid` or `hash` is no string (someone who can write to redis,
without the key: `XADD <prefix>:audit * e '{"hash": ..., "kid": [], ...}'`) are entries that
are no event, passed over, never looked up as keys (found by review revtrail): a list
raised TypeError where a key id or a hash was looked up in a mapping: `GET /v1/drills`
answered 500 (the console's drills panel; a drill restore's `started_with` reads the
trail the same way), and the walks raised: retention's of events under a rotated key
(auditpin.py), the one that says a loss of the trail in a process started after it, and a
re-seed's check of another branch's trail, run in the sync loop (heardloss.py).

Real redis-server and a real gateway for the API; the walks are pure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.domain.audit import event_hash
from gateway.domain.auditpin import ChainFromNewest, pin_walk
from gateway.domain.statedoc import StateDoc
from gateway.state.heardloss import _reaches, walk_loss
from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, running_gateway, two_versions, write_config
from tests.staterig import redis_state
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(60)

KEYS = {"k1": b"s" * 32}


def _intact(ev: dict) -> dict:
    return {**ev, "hash": event_hash(ev)}


def test_the_pin_walk_passes_over_a_kid_that_is_no_string() -> None:
    prev = "a" * 64
    odd = _intact({"prev_hash": prev, "kid": [], "action": "drill.end", "mac": "x"})
    assert pin_walk(prev, [odd], KEYS) == odd["hash"]  # (not genuine, not a held key's)


def test_the_chain_from_newest_passes_over_a_kid_that_is_no_string() -> None:
    chain = ChainFromNewest(KEYS)
    chain.feed([{"hash": "a" * 64, "prev_hash": "b" * 64, "kid": {"x": 1}}])
    chain._expected = "a" * 64  # (as after a newer genuine event continuing it)
    assert chain.by_chain(0) is False


def test_the_loss_walks_pass_over_a_hash_that_is_no_string() -> None:
    junk = [{"hash": [1], "prev_hash": "c" * 64}, {"hash": {"h": 1}}]
    assert walk_loss(StateDoc(audit_head="d" * 64), junk) == "d" * 64  # (needs older)
    assert _reaches(junk, "d" * 64, "e" * 64) is None


async def test_drills_answer_with_such_an_entry_in_the_trail(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        # an entry claiming the hash the next genuine event continues, its kid a list
        forged = {"hash": g.gw.sync.holder.doc.audit_head, "prev_hash": "0" * 64, "kid": [],
                  "action": "drill.end", "drill": "d-forged"}
        redis_server.cmd("XADD", "kgtest:audit", "*", "e", json.dumps(forged))
        await kill(session, g.admin, scope="route", route="iris")
        async with session.get(f"{g.admin}/v1/drills", headers=bearer("killgate:read")) as r:
            body = await r.json()
            assert r.status == 200, body
        assert all(d.get("drill") != "d-forged" for d in body["history"]), body
