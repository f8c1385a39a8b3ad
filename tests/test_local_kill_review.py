"""Emergency local kills, hostile review (revlocal): a genuine journal across a key
rotation, and a sibling that reads the journal only after a merge of many entries.

The journal file is real (flock, fsync, atomic rename), the keys real HMAC keys.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.cli.statuswarn import store_warnings
from gateway.domain import kills
from gateway.domain.audit import utc_now
from gateway.domain.statedoc import StateDoc, apply_change
from gateway.state.localkills import LocalEntry, LocalKills
from gateway.state.signing import Key, Keyring
from tests.backends import echo_app
from tests.conftest import STATE_KEY, GatewayProcess, RedisServer, wait_until
from tests.staterig import redis_state
from tests.test_kills import production_drill
from tests.test_killswitch import fixed_ports_config
from tests.test_local_kill import V2, _call, _metric, _routes, _served

pytestmark = pytest.mark.timeout(120)

OLD = b"old-state-key-0123456789-abcdefghijklmnop"
NEW = b"new-state-key-0123456789-abcdefghijklmnop"


def _entry(n: int) -> LocalEntry:
    return LocalEntry.new("version", f"r{n}", "v2", "alice", "incident", "2026-01-01T00:00:00Z",
                          "gw-a", 3, True)


def test_a_journal_taken_under_the_previous_key_survives_rotation_step_3(
        tmp_path: Path) -> None:
    """Found by review: at rotation step 2 a journal signed with the old key was accepted
    but never re-signed, so step 3 (previous key removed) refused it whole: a genuine
    local kill taken while the store was down was no longer enforced, and the next local
    kill moved it aside (lost)."""
    path = tmp_path / "snap.json.local-kills"
    LocalKills(path, Keyring(Key.of(OLD), context="kgtest")).add(_entry(1))
    step2 = LocalKills(path, Keyring(Key.of(NEW), Key.of(OLD), context="kgtest"))
    assert [e.key for e in step2.read()] == ["version:r1:v2"] and step2.previous_key
    step2.reseal()
    assert not step2.previous_key
    step3 = LocalKills(path, Keyring(Key.of(NEW), context="kgtest"))
    assert [e.key for e in step3.read()] == ["version:r1:v2"], step3.refused
    assert step3.refused is None


def test_a_sibling_reading_after_a_big_merge_tells_every_merged_entry_from_a_dropped_one(
        tmp_path: Path) -> None:
    """Found by review: the file named only the last 64 merged entries while it may hold
    256: a sibling that read it once the merge of more than 64 was done took the rest
    for removed by hand (`local_kill_dropped`) and stopped enforcing them before it held
    the generation with the store's kill (a gap of up to a poll on the whole group)."""
    path = tmp_path / "snap.json.local-kills"
    keys = Keyring(Key.of(NEW), context="kgtest")
    merger = LocalKills(path, keys)
    for n in range(100):
        merger.add(_entry(n))
    sibling = LocalKills(path, keys)
    ids = {e.id for e in sibling.read()}
    assert len(ids) == 100
    for g, e in enumerate(merger.entries, start=10):  # (one at a time, as merge does)
        merger.remove({e.id}, g)
    assert sibling.changed() and sibling.read() == ()
    assert set(sibling.merged) == ids


def test_a_journal_that_cannot_be_read_for_a_moment_is_not_refused_nor_moved_aside(
        tmp_path: Path) -> None:
    """Found by review: any OSError reading the journal (out of file descriptors under
    load, an I/O error) counted as a refused file: every local kill of the group lifted
    (`local_kill_dropped`), and the next local kill moved the genuine file aside."""
    path = tmp_path / "snap.json.local-kills"
    keys = Keyring(Key.of(NEW), context="kgtest")
    LocalKills(path, keys).add(_entry(1))
    worker = LocalKills(path, keys)
    assert [e.key for e in worker.read()] == ["version:r1:v2"]
    LocalKills(path, keys).add(_entry(2))  # (a sibling's: the file changed)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    try:
        for fd in spare:  # (freed below the limit: nothing else may open meanwhile)
            os.close(fd)
        filler: list[int] = []
        while True:  # (every descriptor below the limit taken)
            try:
                filler.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        try:
            kept = worker.read()
            with pytest.raises(OSError):  # (nothing written: 503 local_kill_not_kept)
                worker.add(_entry(3))
        finally:
            for fd in filler:
                os.close(fd)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [e.key for e in kept] == ["version:r1:v2"] and worker.refused is None
    assert worker.unreadable is not None and worker.changed()  # (read again next poll)
    assert not (tmp_path / "snap.json.local-kills.refused").exists()
    assert [e.key for e in worker.read()] == ["version:r1:v2", "version:r2:v2"]


def test_a_local_kill_that_would_make_the_journal_unreadable_is_not_journaled(
        tmp_path: Path) -> None:
    """Found by review: reasons are 1024 characters, written as \\uXXXX escapes (6 bytes
    each): enough local kills wrote a journal over the 1 MiB read limit, which every
    worker then refused whole (every local kill lifted, the next one moved it aside)."""
    path = tmp_path / "snap.json.local-kills"
    keys = Keyring(Key.of(NEW), context="kgtest")
    journal = LocalKills(path, keys)
    n = 0
    with pytest.raises(ValueError, match="would be over"):
        for n in range(256):  # (n: how many went in)
            journal.add(replace(_entry(n), reason="\u732b" * 1024, actor="\u732c" * 1024))
    assert n > 50
    again = LocalKills(path, keys)
    assert len(again.read()) == n and again.refused is None


async def test_an_old_journal_put_back_does_not_re_kill_a_version_unkilled_after_its_merge(
        tmp_path: Path, redis_server: RedisServer, backends: Any,
        gateway_procs: Any) -> None:
    """Found by review: a copy of a journal whose kill was merged and then lifted by an
    unkill (after the incident's review), put back (a restored backup, or anyone who can
    write to the snapshot folder), was merged again as a new kill `after_unkill`: the
    version was killed fleet-wide once more, and the warning said it had been unkilled
    "after the local kill was taken". Now the merge finds the genuine audit event that
    merged that entry, drops it and says so (`kill.local_replayed`)."""
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    a = gateway_procs(fixed_ports_config(tmp_path, _routes(p1, p2),
                                         redis_state(redis_server, tmp_path, "a"), "a"))
    await asyncio.to_thread(a.wait_ready)
    journal = tmp_path / "snapshot-a.json.local-kills"
    async with ClientSession() as s:
        redis_server.kill()
        st, body = await _call(s, "POST", a.admin + "/v1/kill?local=1", V2)
        assert st == 202 and body["local"] is True, body
        old = journal.read_bytes()
        redis_server.start()

        async def local_kills() -> list[Any] | None:
            st, doc = await _call(s, "GET", a.admin + "/v1/status")
            return doc["store"]["local_kills"]["kills"] if st == 200 else None

        async def v2_killed() -> bool:
            st, doc = await _call(s, "GET", a.admin + "/v1/status")
            assert st == 200, doc
            return any(k["version"] == "v2" for k in doc["kills"])

        await wait_until(lambda: _is(local_kills, []), 20, what="the local kill merged")
        assert await v2_killed()
        st, body = await _call(s, "POST", a.admin + "/v1/unkill?wait=0s",
                               {**V2, "reason": "reviewed: v2 is fine"})
        assert st == 200, body
        await wait_until(lambda: _not(v2_killed), 10, what="v2 unkilled")

        journal.write_bytes(old)  # (the old genuine journal, put back)
        await wait_until(lambda: _replayed(s, a), 10, what="the replay named in the trail")
        # (the event is appended before the entry leaves the journal: a moment apart)
        await wait_until(lambda: _is(local_kills, []), 10, what="the replayed entry dropped")
        # (the status's kills follow the table, swapped after the journal's list: a moment
        # apart, seen once in a clean-clone CI; a replay merged again would hold for good)
        await wait_until(lambda: _not(v2_killed), 10, what="v2 not killed by the replay")
        assert "v2" in await _served(s, a)
        st, trail = await _call(s, "GET", a.admin + "/v1/audit?limit=100")
        assert [e["action"] for e in trail["events"] if "local" in e] \
            == ["kill.local_replayed", "kill"]


async def _is(fn: Any, want: Any) -> bool:
    return bool(await fn() == want)


async def _not(fn: Any) -> bool:
    return not await fn()


async def _replayed(s: ClientSession, gw: GatewayProcess) -> bool:
    st, trail = await _call(s, "GET", gw.admin + "/v1/audit?limit=100")
    return st == 200 and any(e["action"] == "kill.local_replayed" for e in trail["events"])


async def test_an_unkill_while_a_local_kill_is_held_says_the_traffic_stays_stopped_here(
        tmp_path: Path, redis_server: RedisServer, backends: Any,
        gateway_procs: Any) -> None:
    """Found by review: with the store back and a local kill not merged yet (a sibling
    holds the group's merge lock), `unkill` of that version answered 409 "there is no
    version kill" and, once the store held a kill too, 200 unkilled: both while the
    instance kept the version's traffic stopped (and merged the kill back a moment later).
    Both answers now name the local kill that still stops it. Once merged, the kill
    stands (`after_unkill`), not taken for a replayed journal."""
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    journal = tmp_path / "snapshot-a.json.local-kills"
    ours = LocalKills(journal, Keyring(Key.of(STATE_KEY.encode()), context="kgtest"))
    ours.add(LocalEntry.new("version", "iris", "v2", "alice", "v2 answers garbage", utc_now(),
                            "gw-a", 0, True))
    lock = ours.merge_lock()  # (a sibling merging: no merge here until it is freed)
    assert lock is not None
    try:
        a = gateway_procs(fixed_ports_config(tmp_path, _routes(p1, p2),
                                             redis_state(redis_server, tmp_path, "a"), "a"))
        await asyncio.to_thread(a.wait_ready)
        async with ClientSession() as s:
            assert await _served(s, a, 10) == {"v1"}
            st, body = await _call(s, "POST", a.admin + "/v1/unkill", V2)
            assert st == 409 and body["error"]["type"] == "not_killed", body
            assert "stopped by the local kill version:iris:v2 (local:" in \
                body["error"]["message"], body
            for op in ("kill", "unkill"):
                st, body = await _call(s, "POST", a.admin + f"/v1/{op}?wait=0s",
                                       {**V2, "reason": f"{op} through the store"})
                assert st == 200 and body["changed"] is True, body
            assert body["still_killed_locally"]["kill"] == "version:iris:v2", body
            assert body["still_killed_locally"]["id"].startswith("local:")
            assert await _served(s, a, 10) == {"v1"}
            lock.close()

            async def merged() -> bool:
                st, doc = await _call(s, "GET", a.admin + "/v1/status")
                return st == 200 and doc["store"]["local_kills"]["kills"] == [] and [
                    (k["version"], k["local"]) for k in doc["kills"]] == [("v2", False)]

            await wait_until(merged, 10, what="the local kill merged, after the unkill")
            st, trail = await _call(s, "GET", a.admin + "/v1/audit?limit=100")
            ev = next(e for e in trail["events"] if "local" in e)
            assert ev["action"] == "kill" and "after_unkill" in ev["local"], ev
    finally:
        lock.close()


async def test_a_merge_whose_journal_cannot_be_rewritten_is_not_committed_again_each_poll(
        tmp_path: Path, redis_server: RedisServer, backends: Any,
        gateway_procs: Any) -> None:
    """Found by review: the volume of the snapshot gone read-only (ext4 remounts so on
    errors) after the store came back: each poll committed the local kill again, found
    it in the store, and appended one more `kill.local_merged` audit event before failing
    to drop it from the journal: the trail flooded at the poll rate, forever. Now the
    commit is made once; only the drop is tried again (the kill stays enforced)."""
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    vol = tmp_path / "vol"
    vol.mkdir()
    a = gateway_procs(fixed_ports_config(tmp_path, _routes(p1, p2),
                                         redis_state(redis_server, vol, "a"), "a"))
    await asyncio.to_thread(a.wait_ready)
    async with ClientSession() as s:
        redis_server.kill()
        st, body = await _call(s, "POST", a.admin + "/v1/kill?local=1", V2)
        assert st == 202 and body["local"] is True, body
        await _chattr("+i", vol)  # (read-only, even to root)
        try:
            redis_server.start()

            def not_dropped() -> bool:
                return "local_kill_not_dropped" in a.output()

            await wait_until(lambda: asyncio.to_thread(not_dropped), 10,
                             what="the merged entry not dropped (read-only volume)")
            # (each poll, 100 ms, tried again: over a second, never committed again)
            loop = asyncio.get_running_loop()
            until = loop.time() + 1.5
            while loop.time() < until:
                st, trail = await _call(s, "GET", a.admin + "/v1/audit?limit=100")
                assert st == 200
                assert [e["action"] for e in trail["events"] if "local" in e] == ["kill"], \
                    trail
                await asyncio.sleep(0.1)
            assert a.output().count("local_kill_not_dropped") == 1
            st, doc = await _call(s, "GET", a.admin + "/v1/status")
            [entry] = doc["store"]["local_kills"]["kills"]
            assert entry["in_store"] >= 1, entry  # (not "not in store": it is)
            assert await _metric(s, a, "killgate_local_kills") == 0.0  # (no page for it)
            assert "LOCAL KILL MERGED, JOURNAL NOT REWRITTEN: version:iris:v2 is in the " \
                "store" in "\n".join(store_warnings(doc))
            assert "v2" not in await _served(s, a, 10)
        finally:
            await _chattr("-i", vol)

        async def dropped() -> bool:
            st, doc = await _call(s, "GET", a.admin + "/v1/status")
            return st == 200 and doc["store"]["local_kills"]["kills"] == []

        await wait_until(dropped, 10, what="the entry dropped once the volume is writable")
        st, trail = await _call(s, "GET", a.admin + "/v1/audit?limit=100")
        assert [e["action"] for e in trail["events"] if "local" in e] == ["kill"], trail


async def _chattr(flag: str, path: Path) -> None:
    await asyncio.to_thread(subprocess.run, ["chattr", flag, str(path)], check=True)


def test_a_local_kill_of_what_a_drill_killed_is_kept_not_answered_in_force() -> None:
    """Found by review: with the store down during a production drill that killed v2,
    `kill --local` of v2 (the real v2 gone bad) answered "in force already, nothing kept
    locally": the drill's restore then lifted it, and the operator's kill was never
    recorded. The local path now follows the kill rule: a drill's kill is taken over."""
    drill = production_drill()
    assert kills.in_force(drill, "version", "iris", "v2") is None
    doc = apply_change(StateDoc(), kills.kill(StateDoc(), "version", "iris", "v2", "bob",
                                              "why", "t"))
    flag = kills.in_force(doc, "version", "iris", "v2")
    assert flag is not None and flag.actor == "bob"
