"""A lost audit trail is said by whichever process answers (found by a new-user review).

`store.audit.trail_lost` was held in memory by the process that re-seeded the store: with
`killgate serve --workers 2`, `killgate status`, `/v1/status` and the console showed
"AUDIT TRAIL LOST" only when that worker answered (half the asks), and the fleet's other
instances never did, while the metric (summed) said it. Now every instance that applies
the re-seed reads the event it anchors, which says the trail before it was lost, and says
it too (gateway/state/heardloss.py), naming the instance that re-seeded.

Real `killgate serve` processes (a `--workers 2` group and a second instance) on a real
redis-server, restarted empty (no persistence).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli.statuswarn import store_warnings
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, free_port, wait_until, write_config
from tests.drillrig import routes
from tests.test_revops_fleet import _state

pytestmark = pytest.mark.timeout(90)

READ = admin_token("killgate:read", "alice", 3 * 3600)  # (module tokens: 3 h, test_module_tokens)
ADMIN = admin_token("killgate:admin", "alice", 3 * 3600)


async def _status(admin: str) -> dict[str, Any] | None:
    """One `/v1/status` on a connection of its own (the kernel hands each to either worker
    of a group)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        try:
            async with s.get(f"{admin}/v1/status",
                             headers={"authorization": f"Bearer {READ}"}) as r:
                return dict(await r.json()) if r.status == 200 else None
        except aiohttp.ClientError:
            return None


async def test_every_instance_and_worker_says_the_trail_was_lost(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: aiohttp.ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    procs = []
    for name, workers in (("a", 2), ("b", 1)):
        (tmp_path / name).mkdir()
        procs.append(gateway_procs(write_config(
            tmp_path / name, routes(p1, p2), state=_state(redis_server, tmp_path / name),
            listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}"),
            workers=workers))
    a, b = procs
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))

    async def fleet_of_three() -> bool:
        st = await _status(b.admin)
        return st is not None and len(st.get("instances") or {}) == 3

    await wait_until(fleet_of_three, 20, 0.1, "A's two workers and B in the fleet")
    async with session.post(f"{b.admin}/v1/kill",
                            json={"scope": "global", "reason": "INC-7"},
                            headers={"authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200, await r.text()
    # every instance holds the kill's audit head; then redis restarts without its data
    await wait_until(fleet_of_three, 20, 0.1, "the fleet after the kill")
    redis_server.restart()
    await wait_until(lambda: redis_server.cmd("EXISTS", "revops:state") == "1", 20, 0.05,
                     what="the re-seed")
    seen: dict[str, dict[str, Any]] = {}  # instance -> its trail_lost

    async def all_say_it() -> bool:
        for admin in (a.admin, a.admin, a.admin, b.admin):
            st = await _status(admin)
            if st is None:
                continue
            lost = ((st.get("store") or {}).get("audit") or {}).get("trail_lost")
            if not lost or not lost.get("reseeded_by"):
                seen.pop(str(st.get("instance")), None)
                return False
            seen[str(st.get("instance"))] = st
        return len(seen) == 3

    await wait_until(all_say_it, 20, 0.05, "each of the three instances to say the loss")
    by = {st["store"]["audit"]["trail_lost"]["reseeded_by"] for st in seen.values()}
    assert len(by) == 1 and by <= set(seen), by
    heads = {st["store"]["audit"]["trail_lost"]["anchored_head"] for st in seen.values()}
    assert len(heads) == 1 and None not in heads, heads
    for st in seen.values():  # what `killgate status` prints of it
        said = [w for w in store_warnings(st) if w.startswith("AUDIT TRAIL LOST")]
        assert said and f"re-seeded by {next(iter(by))} at " in said[0], said
    # whichever worker of A answers: six asks in a row, each says it
    for _ in range(6):
        st = await _status(a.admin)
        assert st is not None and st["store"]["audit"]["trail_lost"], st


def test_the_loss_is_read_only_from_events_the_verified_head_links() -> None:
    """(heardloss.reported_loss) The re-seed is found behind a write that followed it at
    once; never past the head the instance held before; and a re-seed event whose hash
    does not match what links it (written into redis by hand) says nothing."""
    from gateway.domain.audit import AuditDraft, seal
    from gateway.domain.statedoc import StateDoc
    from gateway.state.heardloss import reported_loss, walk_loss

    held = seal(AuditDraft("alice", "kill", {}, "r").as_event(), "0" * 64)
    reseed = seal(AuditDraft("killgate/auto", "state.reseed", {}, "empty", source="i-1",
                             extra={"anchored_head": held["hash"], "trail_lost": True})
                  .as_event(), held["hash"])
    kill = seal(AuditDraft("bob", "kill", {}, "r").as_event(), reseed["hash"])
    page = [kill, reseed]  # (the store lost `held`)

    def doc(head: str) -> StateDoc:
        return StateDoc(generation=5, audit_head=head)

    lost = reported_loss(doc(kill["hash"]), page, held["hash"])
    assert lost is not None and lost["reseeded_by"] == "i-1", lost
    assert lost["anchored_head"] == held["hash"] and lost["time"] == reseed["time"]
    assert reported_loss(doc(kill["hash"]), page, reseed["hash"]) is None  # (seen before)
    plain = seal({**{k: v for k, v in reseed.items() if k != "hash"}, "trail_lost": False},
                 held["hash"])
    assert reported_loss(doc(plain["hash"]), [plain], "") is None  # (no loss said)
    forged = {**reseed, "reason": "edited"}  # (its hash no longer its content's)
    assert reported_loss(doc(reseed["hash"]), [forged], "") is None
    # an edited copy appended past the genuine one is passed over, not the walk's end;
    # a walk that needs older events says which hash it reached
    got = walk_loss(doc(kill["hash"]), [forged, kill, reseed], held["hash"])
    assert isinstance(got, dict) and got["reseeded_by"] == "i-1", got
    assert walk_loss(doc(kill["hash"]), [forged, kill], held["hash"]) == reseed["hash"]


def _events(redis: RedisServer) -> list[dict[str, Any]]:
    raw = subprocess.run(["redis-cli", "-p", str(redis.port), "--raw", "XRANGE",
                          "revops:audit", "-", "+"], capture_output=True, text=True,
                         check=True).stdout
    return [json.loads(ln) for ln in raw.splitlines() if ln.startswith("{")]


async def test_an_instance_that_reads_late_still_says_the_loss(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: aiohttp.ClientSession) -> None:
    """(found by review revmerge41) An instance that applies the re-seed's epoch only after
    more than 16 events followed it (stalled across the re-seed and a burst of writes: a
    VM pause, a partition; or someone who can write to redis appending entries) read only
    the newest 16 and never found the re-seed: no AUDIT TRAIL LOST there, for good. It now
    reads further back, page by page, to the head it held; entries forged into the stream
    (a copy of the re-seed edited, junk) are passed over, not taken as the end."""

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        procs.append(gateway_procs(write_config(
            tmp_path / name, routes(p1, p2), state=_state(redis_server, tmp_path / name),
            listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")))
    a, b = procs
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))
    hdr = {"authorization": f"Bearer {ADMIN}"}
    async with session.post(f"{a.admin}/v1/kill", json={"scope": "global", "reason": "INC-8"},
                            headers=hdr) as r:
        assert r.status == 200, await r.text()

    async def b_holds_a_head() -> bool:
        sa, sb = await _status(a.admin), await _status(b.admin)
        head = ((sa or {}).get("store") or {}).get("audit", {}).get("anchored_head")
        return bool(head) and head == ((sb or {}).get("store") or {}).get(
            "audit", {}).get("anchored_head")

    await wait_until(b_holds_a_head, 20, 0.05, "B holds the kill")
    os.killpg(b.proc.pid, signal.SIGSTOP)
    try:
        redis_server.cmd("FLUSHALL")
        await wait_until(lambda: redis_server.cmd("EXISTS", "revops:state") == "1", 20, 0.05,
                         what="A's re-seed")
        for i in range(12):  # 24 events after the re-seed
            for path in ("/v1/kill", "/v1/unkill"):
                async with session.post(f"{a.admin}{path}", headers=hdr, json={
                        "scope": "route", "route": "iris", "reason": f"r{i}"}) as r:
                    assert r.status in (200, 409), await r.text()
        # and a copy of the re-seed, edited, and junk, appended by hand (no key needed)
        reseed = next(e for e in await asyncio.to_thread(_events, redis_server)
                      if e["action"] == "state.reseed")
        assert reseed.get("trail_lost") is True, reseed
        redis_server.cmd("XADD", "revops:audit", "*", "e",
                         json.dumps({**reseed, "trail_lost": False}))
        for i in range(20):
            redis_server.cmd("XADD", "revops:audit", "*", "e", json.dumps({"junk": i}))
    finally:
        os.killpg(b.proc.pid, signal.SIGCONT)

    async def b_says_it() -> bool:
        st = await _status(b.admin)
        lost = ((st or {}).get("store") or {}).get("audit", {}).get("trail_lost")
        return bool(lost and lost.get("reseeded_by"))

    await wait_until(b_says_it, 15, 0.1, "B to say the loss A's re-seed reported")


async def test_a_second_loss_is_said_by_every_instance_not_the_first_one_again(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: aiohttp.ClientSession) -> None:
    """(found by review revmerge41) An instance that already said a loss never read another
    instance's later re-seed: after a second loss it went on naming the first one (its
    head, its time, who re-seeded) while the instance that re-seeded named the second: the
    head to look for in the mirror or a backup differed by which instance answered."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        procs.append(gateway_procs(write_config(
            tmp_path / name, routes(p1, p2), state=_state(redis_server, tmp_path / name),
            listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")))
    a, b = procs
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))
    hdr = {"authorization": f"Bearer {ADMIN}"}

    async def losses() -> list[Any]:
        out = []
        for p in (a, b):
            st = await _status(p.admin)
            out.append(((st or {}).get("store") or {}).get("audit", {}).get("trail_lost"))
        return out

    async def heads_agree() -> bool:
        heads = set()
        for p in (a, b):
            st = await _status(p.admin)
            heads.add(((st or {}).get("store") or {}).get("audit", {}).get("anchored_head"))
        return len(heads) == 1 and None not in heads

    for n, reason in enumerate(("INC-1", "INC-2")):
        async with session.post(f"{a.admin}/v1/kill", headers=hdr, json={
                "scope": "route", "route": "iris", "reason": reason}) as r:
            assert r.status == 200, await r.text()
        await wait_until(heads_agree, 20, 0.05, "both hold the kill")
        async with session.post(f"{a.admin}/v1/unkill", headers=hdr, json={
                "scope": "route", "route": "iris", "reason": reason}) as r:
            assert r.status == 200, await r.text()
        await wait_until(heads_agree, 20, 0.05, "both hold the unkill")
        held = next(iter({(await _status(a.admin) or {})["store"]["audit"]["anchored_head"]}))
        redis_server.cmd("FLUSHALL")

        async def both_say_this_one(held: str = held) -> bool:
            said = await losses()
            return all(lost and lost.get("reseeded_by") and lost["anchored_head"] == held
                       for lost in said)

        await wait_until(both_say_this_one, 20, 0.05, f"both to say loss {n + 1}")
