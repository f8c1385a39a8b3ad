"""Attacks on signed state and the keyed audit trail (issue 12 review): real redis-server,
real gateways.

The attacker can write anything to Redis (and read it) but does not hold the signing or
audit key; some attacks also assume disk access to an instance, or only the admin port
without a token. Each test states the attack and what must hold. What the design cannot
stop (deleting keys is a denial of service) is stated in the README's "Trust" section.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_forgery import stays_killed
from tests.test_keyed_audit import KEY, H, events_in, verify, verify_mirror
from tests.test_killswitch import redis_state


def stream_ids(redis: RedisServer) -> list[str]:
    raw = subprocess.run(["redis-cli", "-p", str(redis.port), "--raw", "XRANGE", "kgtest:audit",
                          "-", "+"], capture_output=True, text=True, check=True).stdout
    return [line for line in raw.splitlines() if line[:1].isdigit() and "-" in line]


def stored_kills(redis: RedisServer) -> dict[str, Any]:
    raw = redis.cmd("GET", "kgtest:state")
    if not raw.startswith("KGS1 "):
        return {}
    return dict(json.loads(raw.split("\n", 1)[1])["kills"])


async def post(session: Any, admin: str, path: str, **body: Any) -> dict[str, Any]:
    body.setdefault("reason", "r")
    async with session.post(admin + path, headers=H, json=body) as r:
        data = await r.json()
        assert r.status == 200, data
        return dict(data)


# ------------------------------------------------------------------ the audit head key


async def test_a_rewound_head_key_cannot_cut_events_out_of_the_trail(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """The head key (`<p>:audit:head`) is not signed. The attacker points it at an older
    event; the next genuine event must not be chained after that one, or deleting the
    events in between would leave a shorter trail that verifies, MACs, anchor and all."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
        await post(session, g.admin, "/v1/unkill", scope="route", route="iris")  # to hide
        genuine = events_in(redis_server)
        ids = stream_ids(redis_server)
        assert genuine[-1]["action"] == "unkill"
        redis_server.cmd("SET", "kgtest:audit:head", genuine[-2]["hash"])
        await post(session, g.admin, "/v1/kill", scope="global")
        redis_server.cmd("XDEL", "kgtest:audit", ids[-1])  # the unkill's event
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1, res.stdout
        assert "BROKEN" in res.stderr
        # the new event continues the signed document's head, whatever the key said
        assert events_in(redis_server)[-1]["prev_hash"] == genuine[-1]["hash"]
        assert g.gw.sync.tamper.counts.get("audit", 0) >= 1


async def test_a_deleted_head_key_does_not_restart_the_chain(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """Deleting the head key must not make the next event start a new chain (64 zeros)
    in the middle of the stream: it continues the anchored head, and the trail verifies."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
        head = events_in(redis_server)[-1]["hash"]
        redis_server.cmd("DEL", "kgtest:audit:head")
        await post(session, g.admin, "/v1/unkill", scope="route", route="iris")
        assert events_in(redis_server)[-1]["prev_hash"] == head
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 0, res.stderr
        assert redis_server.cmd("GET", "kgtest:audit:head") == events_in(redis_server)[-1]["hash"]


async def test_a_replayed_document_cannot_rewind_the_head_to_cut_recent_events(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """An event without a state change (here: the record of an idempotent retry) used to be
    committed with a document of the same generation as the one before it. Replaying that
    earlier genuine document, rewinding the head key to the hash it names and deleting the
    event made the next genuine event continue the older head: the record was gone and
    the trail verified. Documents of one generation are now ordered by `audit_seq`."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        hdrs = {**H, "Idempotency-Key": "k1"}
        body = {"scope": "route", "route": "iris", "reason": "r"}
        async with session.post(g.admin + "/v1/kill", headers=hdrs, json=body) as r:
            assert r.status == 200
        before_raw = redis_server.cmd("GET", "kgtest:state")
        before_gen = redis_server.cmd("GET", "kgtest:gen")
        kill_ev = events_in(redis_server)[-1]
        async with session.post(g.admin + "/v1/kill", headers=hdrs, json=body) as r:
            assert r.status == 200 and r.headers.get("idempotent-replayed") == "true"
        await wait_until(lambda: events_in(redis_server)[-1]["action"] == "replay", 5,
                         what="the replay record")
        assert redis_server.cmd("GET", "kgtest:gen") == before_gen  # no state change
        replay_id = stream_ids(redis_server)[-1]
        redis_server.cmd("SET", "kgtest:state", before_raw)
        redis_server.cmd("SET", "kgtest:gen", before_gen)
        redis_server.cmd("SET", "kgtest:audit:head", kill_ev["hash"])
        redis_server.cmd("XDEL", "kgtest:audit", replay_id)
        await post(session, g.admin, "/v1/kill", scope="global")
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1, res.stdout
        assert "BROKEN" in res.stderr


async def test_a_store_rolled_back_to_an_older_genuine_state_keeps_the_kill(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """The attacker saved a genuine earlier state (document, generation, head key) and
    restores it after a kill, deleting the kill's event: a consistent store, as a backup
    restore would leave it. The instance keeps the kill (the document is older than its
    own), re-seeds the store with it, and continues the trail from the head it had
    anchored: `audit verify` names the lost events, and the mirror continues unbroken."""
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "mirror.jsonl"
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(
        redis_server, tmp_path, extra=f"  audit_mirror: {mirror}\n"))
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="version", route="iris", version="v2")
        saved = {k: redis_server.cmd("GET", k)
                 for k in ("kgtest:state", "kgtest:gen", "kgtest:audit:head")}
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
        kill_id = stream_ids(redis_server)[-1]
        reseeds = g.gw.metrics.get("killgate_state_reseeds_total")
        for k, v in saved.items():
            redis_server.cmd("SET", k, v)
        redis_server.cmd("XDEL", "kgtest:audit", kill_id)
        await stays_killed(session, [g.url], 0.5)
        await wait_until(lambda: g.gw.metrics.get("killgate_state_reseeds_total") > reseeds,
                         5, what="the re-seed")
        assert "route:iris" in g.gw.holder.doc.kills
        assert events_in(redis_server)[-1]["action"] == "state.reseed"
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1 and "the store lost events" in res.stderr, res.stderr
        n = len(events_in(redis_server)) + 1  # the mirror also holds the deleted event
        await wait_until(lambda: mirror.exists() and len(mirror.read_text().splitlines()) == n,
                         5, what="the mirror to continue")
        assert g.gw.sync.status()["audit"]["mirror"]["ok"]
    res = await asyncio.to_thread(verify_mirror, mirror)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------ idempotency records


async def test_an_expired_idempotency_record_cannot_be_put_back(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """The attacker keeps a genuine idempotency record and puts it back after it expired:
    a later request with the same key and body (a script's fixed key) would be answered
    "killed" from it, and nothing killed. A record carries its signed expiry."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        hdrs = {**H, "Idempotency-Key": "kill-iris"}
        body = {"scope": "route", "route": "iris", "reason": "r"}
        ident = hashlib.sha256(b"alice\nkill-iris").hexdigest()
        async with session.post(g.admin + "/v1/kill", headers=hdrs, json=body) as r:
            assert r.status == 200
        record = redis_server.cmd("GET", f"kgtest:idem:{ident}")
        assert record.startswith("KGS1 ")
        await post(session, g.admin, "/v1/unkill", scope="route", route="iris")
        redis_server.cmd("DEL", f"kgtest:idem:{ident}")  # what its TTL does, a day later
        # (the record's signed expiry is set back, as a day's wait would leave it)
        g.gw.sync.store.clock = lambda: time.time() + 2 * 86400  # type: ignore[method-assign]
        redis_server.cmd("SET", f"kgtest:idem:{ident}", record)
        async with session.post(g.admin + "/v1/kill", headers=hdrs, json=body) as r:
            got = await r.json()
            assert r.status == 200, got
            assert r.headers.get("idempotent-replayed") is None, got
        assert "route:iris" in g.gw.holder.doc.kills
        assert g.gw.sync.tamper.counts.get("idempotency", 0) >= 1


# ------------------------------------------------------------------ re-seed floods


async def test_replays_and_deletions_cannot_flood_the_audit_trail_with_reseeds(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """Forged documents already back off. The same attacker can also replay a genuine older
    document, rewrite only the (unsigned) generation key, or delete the state: each one
    used to be repaired at once by every instance, one audited re-seed per poll."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        old = {k: redis_server.cmd("GET", k) for k in ("kgtest:state", "kgtest:gen")}
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
        attacks = {
            "replayed older document": lambda n: [("SET", "kgtest:state", old["kgtest:state"]),
                                                  ("SET", "kgtest:gen", old["kgtest:gen"])],
            "generation key rewritten": lambda n: [("SET", "kgtest:gen", str(10_000 + n))],
            "state deleted": lambda n: [("DEL", "kgtest:state", "kgtest:gen")],
        }
        for how, writes in attacks.items():
            reseeds = g.gw.metrics.get("killgate_state_reseeds_total")
            events = len(events_in(redis_server))
            end = time.monotonic() + 2.0  # (a fixed window: what is counted is what happens in it)
            n = 0
            while time.monotonic() < end:
                n += 1
                for cmd in writes(n):
                    redis_server.cmd(*cmd)
                await asyncio.sleep(0.01)
            assert n > 50
            assert g.gw.metrics.get("killgate_state_reseeds_total") - reseeds <= 5, how
            assert len(events_in(redis_server)) - events <= 5, how
            await stays_killed(session, [g.url], 0.2)
        # a write repairs at once, whatever the backoff: the store holds the kill again
        await post(session, g.admin, "/v1/kill", scope="version", route="iris", version="v2")
        assert {"route:iris", "version:iris:v2"} <= stored_kills(redis_server).keys()

