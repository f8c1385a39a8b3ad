"""Emergency local kills (`POST /v1/kill?local=1`, `killgate kill --local`): the lever when
the state store cannot commit a kill (found by the new-user review: with redis down and a
route latched by a runtime override, a kill answered 503 and a config weight of 0 was
ignored because of the latch: no lever at all).

Real redis-server stopped and started, real `killgate serve` processes, real backends:
the kill taken while the store is down stops that version's traffic on the instance that
took it at once, survives its restart, and is committed into the store when it returns
(enforced by the other instance, audited, the local mark cleared). A journal file signed
with another key, or edited, is refused whole.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from gateway.domain.statedoc import StateDoc
from gateway.state.localkills import LocalEntry, LocalKills
from gateway.state.localmerge import after_unkill
from gateway.state.signing import Key, Keyring
from tests.backends import echo_app
from tests.conftest import STATE_KEY, GatewayProcess, RedisServer, bearer, wait_until
from tests.staterig import redis_state
from tests.test_killswitch import fixed_ports_config

pytestmark = pytest.mark.timeout(120)

AUTH = bearer("killgate:kill killgate:read killgate:rollout", "alice", 10800)
INFER = "/v2/models/iris/infer"
V2 = {"scope": "version", "route": "iris", "version": "v2", "reason": "v2 answers garbage"}


def _routes(p1: int, p2: int) -> str:
    return (f"- name: iris\n  match: {{path_prefix: /v2/models/iris}}\n  stable: v1\n"
            f"  versions:\n    - {{name: v1, url: \"http://127.0.0.1:{p1}\", weight: 50}}\n"
            f"    - {{name: v2, url: \"http://127.0.0.1:{p2}\", weight: 50}}\n")


async def _served(session: ClientSession, gw: GatewayProcess, n: int = 20) -> set[str]:
    """The versions that answered `n` requests (an answer without one: its status)."""
    seen: set[str] = set()
    for _ in range(n):
        async with session.post(gw.url + INFER, json={}) as r:
            body = await r.json(content_type=None)
            seen.add(body.get("version") if r.status == 200 else str(r.status))
    return seen


async def _call(session: ClientSession, method: str, url: str,
                body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers=AUTH,
                               timeout=ClientTimeout(total=10)) as r:
        return r.status, await r.json(content_type=None)


async def _metric(session: ClientSession, gw: GatewayProcess, name: str) -> float:
    async with session.get(gw.admin + "/metrics", headers=AUTH) as r:
        text = await r.text()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith(name + " "))


async def test_local_kill_while_the_store_is_down_is_enforced_kept_and_merged(
        tmp_path: Path, redis_server: RedisServer, backends: Any,
        gateway_procs: Any) -> None:
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    cfgs = [fixed_ports_config(tmp_path, _routes(p1, p2),
                               redis_state(redis_server, tmp_path, n), n) for n in "ab"]
    a, b = gateway_procs(cfgs[0]), gateway_procs(cfgs[1])
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))
    async with ClientSession() as s:
        # the 3 a.m. shape: a runtime override latches the route onto v2 alone
        st, body = await _call(s, "PUT", a.admin + "/v1/routes/iris/weights?wait=2s",
                               {"weights": {"v1": 0, "v2": 100}, "reason": "v2 looked good"})
        assert st == 200, body
        await wait_until(lambda: _served(s, b, 5), 10, what="b on the override")
        assert await _served(s, a) == {"v2"}

        redis_server.kill()
        # without the opt-in: 503 as before, naming the lever; nothing changed
        st, body = await _call(s, "POST", a.admin + "/v1/kill", V2)
        assert st == 503 and body["error"]["type"] == "state_store_unavailable", body
        assert "?local=1" in body["error"]["message"]
        assert await _served(s, a, 5) == {"v2"}

        st, body = await _call(s, "POST", a.admin + "/v1/kill?local=1", V2)
        assert st == 202, body
        assert body["local"] is True and body["changed"] is True
        assert body["kill"] == "version:iris:v2"
        # enforced at once on the instance that took it (the answer came after the swap)
        assert "v2" not in await _served(s, a)
        assert "v2" in await _served(s, b)  # (documented: not the fleet's until merged)
        st, status = await _call(s, "GET", a.admin + "/v1/status")
        assert [k["local"] for k in status["kills"]] == [True]
        assert [k["kill"] for k in status["store"]["local_kills"]["kills"]] \
            == ["version:iris:v2"]
        assert await _metric(s, a, "killgate_local_kills") == 1.0

        # the instance restarted while the store is still down: still killed
        a.stop()
        a = gateway_procs(cfgs[0])
        await asyncio.to_thread(a.wait_ready)
        assert "v2" not in await _served(s, a)

        # the store back (empty: no persistence): the kill is committed, the fleet enforces it
        redis_server.start()

        async def b_killed() -> bool:
            st, doc = await _call(s, "GET", b.admin + "/v1/status")
            return st == 200 and any(k["id"] and not k["local"] and k["version"] == "v2"
                                     for k in doc["kills"])

        await wait_until(b_killed, 20, what="b enforcing the merged kill")
        assert "v2" not in await _served(s, b)

        async def cleared() -> bool:
            st, doc = await _call(s, "GET", a.admin + "/v1/status")
            return st == 200 and doc["store"]["local_kills"]["kills"] == [] \
                and [k["local"] for k in doc["kills"]] == [False]

        await wait_until(cleared, 10, what="a's local mark cleared")
        assert await _metric(s, a, "killgate_local_kills") == 0.0
        assert "v2" not in await _served(s, a)
        st, trail = await _call(s, "GET", b.admin + "/v1/audit?limit=100")
        merged = [e for e in trail["events"] if e["action"] == "kill" and "local" in e]
        assert len(merged) == 1, trail
        assert merged[0]["actor"] == "alice" and merged[0]["reason"] == V2["reason"]
        assert merged[0]["local"]["id"].startswith("local:")


async def test_local_is_refused_on_anything_but_a_kill_and_when_malformed(
        tmp_path: Path, redis_server: RedisServer, backends: Any,
        gateway_procs: Any) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = fixed_ports_config(tmp_path, _routes(p1, p1), redis_state(redis_server, tmp_path),
                             "a")
    # a journal forged with another key is there at start: refused whole, shown, not enforced
    journal = tmp_path / "snapshot-a.json.local-kills"
    LocalKills(journal, _keys("another-key-0123456789-abcdefghijklmnopq")).add(
        LocalEntry.new("route", "iris", None, "mallory", "forged", "t", "x", 0, True))
    forged = journal.read_bytes()
    a = gateway_procs(cfg)
    await asyncio.to_thread(a.wait_ready)
    redis_server.kill()
    async with ClientSession() as s:
        st, status = await _call(s, "GET", a.admin + "/v1/status")
        assert status["kills"] == [] and "unknown key id" in status["store"]["local_kills"][
            "refused"]
        assert await _served(s, a, 5) == {"v1"}
        for path, body in (("/v1/kill?local=yes", V2), ("/v1/unkill?local=1", V2),
                           ("/v1/routes/iris/rollback?local=1", {"reason": "r"})):
            st, answer = await _call(s, "POST", a.admin + path, body)
            assert st == 400, (path, answer)
        st, status = await _call(s, "GET", a.admin + "/v1/status")
        assert status["kills"] == [] and status["store"]["local_kills"]["kills"] == []
        # a token without killgate:kill: 403, nothing kept
        async with s.post(a.admin + "/v1/kill?local=1", json=V2,
                          headers=bearer("killgate:read")) as r:
            assert r.status == 403
        assert journal.read_bytes() == forged


def _keys(secret: str) -> Keyring:
    return Keyring(Key.of(secret.encode()), context="kgtest")


def test_a_journal_signed_with_another_key_or_edited_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "snap.json.local-kills"
    entry = LocalEntry.new("version", "iris", "v2", "mallory", "forged", "2026-01-01T00:00:00Z",
                           "x", 0, True)
    LocalKills(path, _keys("another-key-0123456789-abcdefghijklmnopq")).add(entry)
    ours = LocalKills(path, _keys(STATE_KEY))
    assert ours.read() == () and ours.refused is not None and "unknown key id" in ours.refused
    assert ours.flags() == {}

    path.unlink()
    LocalKills(path, _keys(STATE_KEY)).add(entry)
    assert [e.key for e in LocalKills(path, _keys(STATE_KEY)).read()] == ["version:iris:v2"]
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'"mallory"', b'"alice"'))  # edited: another actor
    ours = LocalKills(path, _keys(STATE_KEY))
    assert ours.read() == () and "does not match" in str(ours.refused)
    # another deployment's (prefix) journal, signed with our key: refused too
    path.unlink()
    other = Keyring(Key.of(STATE_KEY.encode()), context="otherprefix")
    LocalKills(path, other).add(entry)
    assert LocalKills(path, _keys(STATE_KEY)).read() == ()
    # the next local kill moves a refused file aside, and keeps only its own
    mine = LocalKills(path, _keys(STATE_KEY))
    mine.add(LocalEntry.new("route", "wine", None, "alice", "r", "t", "x", 0, True))
    assert [e.key for e in mine.entries] == ["route:wine"]
    assert (tmp_path / "snap.json.local-kills.refused").exists()
    assert json.loads(path.read_bytes().partition(b"\n")[2])["deployment"] == "kgtest"
    # a merged entry leaves the file named as merged (a sibling tells it from one removed
    # by hand, which it reports as `local_kill_dropped`)
    gone = mine.entries[0].id
    mine.remove({gone}, 12)
    again = LocalKills(path, _keys(STATE_KEY))
    assert again.read() == () and again.merged == {gone: 12}


def test_an_unkill_made_elsewhere_after_the_local_kill_is_named_not_dropped() -> None:
    e = LocalEntry.new("version", "iris", "v2", "alice", "r", "t", "a", 7, True)
    assert after_unkill(StateDoc(generation=9), e) is None
    assert after_unkill(StateDoc(generation=9, lifted={"version:iris:v2": 5}), e) is None
    assert after_unkill(StateDoc(generation=9, lifted={"version:iris:v2": 8}), e) == 8


async def test_every_worker_of_a_group_enforces_a_local_kill_one_of_them_took(
        tmp_path: Path, redis_server: RedisServer, backends: Any,
        gateway_procs: Any) -> None:
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    cfg = fixed_ports_config(tmp_path, _routes(p1, p2), redis_state(redis_server, tmp_path),
                             "a")
    a = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(a.wait_ready, 60.0, 2)
    redis_server.kill()
    async with ClientSession() as s:
        st, body = await _call(s, "POST", a.admin + "/v1/kill?local=1", V2)
        assert st == 202, body

        async def none_to_v2() -> bool:
            # (a connection each: SO_REUSEPORT spreads connections over both workers)
            for _ in range(12):
                async with ClientSession() as fresh:
                    if "v2" in await _served(fresh, a, 3):
                        return False
            return True

        await wait_until(none_to_v2, 5, what="both workers enforcing the local kill")
        assert await _metric(s, a, "killgate_local_kills") == 1.0
        # the store back: the group merges it once (one audited kill, no second record),
        # and no request reaches v2 meanwhile (a sibling keeps the kill until it holds
        # the merged document: dropped with the journal's entry, v2 served in between)
        leaks: list[str] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            while not stop.is_set():
                async with ClientSession() as fresh:
                    leaks.extend(v for v in await _served(fresh, a, 2) if v == "v2")

        load = asyncio.create_task(traffic())
        redis_server.start()

        async def merged() -> list[dict[str, Any]] | None:
            st, doc = await _call(s, "GET", a.admin + "/v1/status")
            if st != 200 or doc["store"]["local_kills"]["kills"]:
                return None
            st, trail = await _call(s, "GET", a.admin + "/v1/audit?limit=100")
            return [e for e in trail["events"] if "local" in e] if st == 200 else None

        events = await wait_until(merged, 20, what="the group's local kill merged")
        assert [e["action"] for e in events] == ["kill"], events
        await asyncio.sleep(0.5)  # (traffic on after the merge, both workers' swaps)
        stop.set()
        await load
        assert leaks == []


async def test_the_cli_takes_a_local_kill_and_status_says_it_is_not_in_the_store(
        tmp_path: Path, redis_server: RedisServer, backends: Any,
        gateway_procs: Any) -> None:
    from tests.test_cli import cli

    p1 = await backends(echo_app("v1"))
    cfg = fixed_ports_config(tmp_path, _routes(p1, p1), redis_state(redis_server, tmp_path),
                             "a")
    a = gateway_procs(cfg)
    await asyncio.to_thread(a.wait_ready)
    redis_server.kill()
    env = {"KILLGATE_ADMIN_URL": a.admin,
           "KILLGATE_TOKEN": AUTH["Authorization"].split(" ", 1)[1]}
    argv = ("kill", "--route", "iris", "--version", "v2", "--reason", "garbage")
    plain = await asyncio.to_thread(cli, *argv, env=env)
    assert plain.returncode == 1 and "--local" in plain.stderr, plain
    took = await asyncio.to_thread(cli, *argv, "--local", env=env)
    assert took.returncode == 5, took
    assert took.stdout.startswith("LOCAL KILL version:iris:v2 on ")
    assert "NOT by other instances" in took.stdout
    status = await asyncio.to_thread(cli, "status", env=env)
    assert "LOCAL KILL NOT IN STORE: version:iris:v2" in status.stdout, status


async def test_a_sibling_keeps_a_merged_kill_until_it_holds_it_and_one_removed_by_hand_is_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from gateway.state.localmerge import LocalKillKeeper

    path = tmp_path / "snap.json.local-kills"
    held: list[dict[str, Any]] = []
    sync = SimpleNamespace(holder=SimpleNamespace(doc=StateDoc(generation=3)), instance="a")
    keeper = LocalKillKeeper(sync, LocalKills(path, _keys(STATE_KEY)),  # type: ignore[arg-type]
                             lambda flags: held.append(dict(flags)))
    await keeper.take("version", "iris", "v2", "alice", "r", True)
    assert list(held[-1]) == ["version:iris:v2"]
    # a sibling worker merged it at generation 5: kept here until this process holds 5
    sibling = LocalKills(path, _keys(STATE_KEY))
    sibling.read()
    sibling.remove({sibling.entries[0].id}, 5)
    await keeper.load()
    assert list(held[-1]) == ["version:iris:v2"]
    sync.holder.doc = StateDoc(generation=5)
    keeper.enforce()
    assert held[-1] == {}
    # one removed by hand (never merged): lifted, and said
    await keeper.take("route", "iris", None, "alice", "r", True)
    sibling.read()
    sibling._locked(lambda old: ())  # (the entry deleted, not merged)
    with caplog.at_level("WARNING"):
        await keeper.load()
    assert held[-1] == {}
    assert [r.getMessage() for r in caplog.records].count("local_kill_dropped") == 1


async def test_a_kill_and_unkill_made_elsewhere_meanwhile_do_not_drop_the_local_kill(
        tmp_path: Path, redis_server: RedisServer, fwd: Any, backends: Any,
        gateway_procs: Any) -> None:
    """Instance a is cut off from the store (the others reach it); someone kills and unkills
    v2 through b meanwhile. a's local kill is committed when it reconnects, loudly: its
    audit event names the unkill it comes after (`local.after_unkill`)."""
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2"))
    via = redis_state(redis_server, tmp_path, "a").replace(
        f"127.0.0.1:{redis_server.port}", f"127.0.0.1:{fwd.port}")
    a = gateway_procs(fixed_ports_config(tmp_path, _routes(p1, p2), via, "a"))
    b = gateway_procs(fixed_ports_config(tmp_path, _routes(p1, p2),
                                         redis_state(redis_server, tmp_path, "b"), "b"))
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))
    async with ClientSession() as s:
        fwd.point(None)  # (a's link to the store: dropped, and refused from now on)

        async def a_cut_off() -> bool:
            st, doc = await _call(s, "GET", a.admin + "/v1/status")
            return st == 200 and doc["store"]["connected"] is False

        await wait_until(a_cut_off, 10, what="a cut off from the store")
        st, body = await _call(s, "POST", a.admin + "/v1/kill?local=1", V2)
        assert st == 202 and body["local"] is True, body
        for op in ("kill", "unkill"):
            st, body = await _call(s, "POST", b.admin + f"/v1/{op}?wait=0s",
                                   {**V2, "reason": f"{op} elsewhere"})
            assert st == 200, body
        fwd.point(redis_server.port)

        async def merged() -> dict[str, Any] | None:
            st, trail = await _call(s, "GET", b.admin + "/v1/audit?limit=100")
            found = [e for e in trail.get("events", ()) if "local" in e]
            return found[0] if st == 200 and found else None

        ev = await wait_until(merged, 20, what="a's local kill merged")
        assert ev["action"] == "kill" and ev["local"]["after_unkill"]["lifted_generation"] > 0
        assert "v2" not in await _served(s, b, 10)  # (the fleet enforces it: not dropped)
