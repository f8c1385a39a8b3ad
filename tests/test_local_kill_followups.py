"""Follow-ups of the emergency local kill (implocal3): each failed before its change.

Real redis-server, real `killgate serve` processes, real backends; a journal entry written
with the deployment's key where the test needs one (what a sibling worker writes)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.state.localkills import LocalEntry, LocalKills
from tests.backends import echo_app
from tests.conftest import STATE_KEY, RedisServer, wait_until
from tests.staterig import redis_state
from tests.test_killswitch import fixed_ports_config
from tests.test_local_kill import V2, _call, _keys, _routes

pytestmark = pytest.mark.timeout(60)


async def test_an_entry_taken_holding_no_state_says_the_unkills_order_is_unknown(
        tmp_path: Path, redis_server: RedisServer, backends: Any, gateway_procs: Any) -> None:
    """An entry with `based_on` 0 (its instance held no state yet) was merged naming an
    unkill made before it as "after the local kill was taken": now the order is said
    unknown, in the warning and in the audit event (`local.after_unkill.order`)."""
    p1 = await backends(echo_app("v1"))
    a = gateway_procs(fixed_ports_config(tmp_path, _routes(p1, p1),
                                         redis_state(redis_server, tmp_path, "a"), "a"))
    await asyncio.to_thread(a.wait_ready)
    async with ClientSession() as s:
        for op in ("kill", "unkill"):
            st, body = await _call(s, "POST", a.admin + f"/v1/{op}?wait=0s", V2)
            assert st == 200, body
        journal = LocalKills(tmp_path / "snapshot-a.json.local-kills", _keys(STATE_KEY))
        entry = LocalEntry.new("version", "iris", "v2", "alice", "taken at start",
                               "2026-01-01T00:00:00Z", "a", 0, True)
        await asyncio.to_thread(journal.add, entry)

        async def merged() -> dict[str, Any] | None:
            st, trail = await _call(s, "GET", a.admin + "/v1/audit?limit=100")
            found = [e for e in trail.get("events", ()) if "local" in e]
            return found[0] if st == 200 and found else None

        ev = await wait_until(merged, 20, what="the entry merged")
    assert ev["action"] == "kill" and ev["local"]["based_on"] == 0, ev
    assert ev["local"]["after_unkill"]["order"] == "unknown", ev
    log = a.output()
    assert "local_kill_after_unkill" in log and "before or after the local kill" in log, log


def test_the_note_of_a_local_kill_in_the_store_does_not_say_not_in_the_store_yet() -> None:
    """An entry merged into the store whose journal could not be rewritten (`in_store`,
    a volume gone read-only) was named in an unkill's `still_killed_locally` and 409
    `not_killed` as "not in the store yet": now the words say it is in the store, and why
    it still stops the traffic here."""
    from types import SimpleNamespace

    from gateway.admin.localkill import held, not_killed
    from gateway.errors import ConflictingState

    kept = {"kill": "version:iris:v2", "id": "local:ab", "actor": "alice", "time": "t"}
    target = {"scope": "version", "route": "iris", "version": "v2"}
    pending = held(SimpleNamespace(public=lambda: {"kills": [kept]}), target)  # type: ignore[arg-type]
    assert pending is not None and "not in it yet" in pending["why"]
    assert "in_store" not in pending
    merged = held(SimpleNamespace(  # type: ignore[arg-type]
        public=lambda: {"kills": [{**kept, "in_store": 7}]}), target)
    assert merged is not None and merged["in_store"] == 7, merged
    assert "not in" not in merged["why"] and "generation 7" in merged["why"], merged
    assert "cannot be rewritten" in merged["why"]
    said = not_killed(ConflictingState("not_killed", "v2 is not killed"), merged).message
    assert "not in the store yet" not in said and "generation 7" in said, said
    said = not_killed(ConflictingState("not_killed", "v2 is not killed"), pending).message
    assert "not in the store yet" in said


async def test_kill_local_answered_through_the_store_names_instances_not_heard_from(
        tmp_path: Path, redis_server: RedisServer, backends: Any, gateway_procs: Any) -> None:
    """`killgate kill --local` with the store up is a kill like any other (200 and its
    receipt), but skipped the warning a plain `kill` prints under its receipt: the
    instances not heard from within the lease (crashed, or cut off from the store and not
    enforcing it). Now it prints the same."""
    import signal

    from tests.test_cli import cli
    from tests.test_local_kill import AUTH
    from tests.test_revops_fleet import _name

    p1 = await backends(echo_app("v1"))
    a, b = (gateway_procs(fixed_ports_config(tmp_path, _routes(p1, p1),
                                             redis_state(redis_server, tmp_path, n), n))
            for n in "ab")
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))
    gone = _name(b.output())
    b.signal(signal.SIGKILL)
    async with ClientSession() as s:
        async def silent() -> bool:
            st, fleet = await _call(s, "GET", a.admin + "/v1/fleet")
            return st == 200 and any(r.get("instance") == gone and r.get("live") is False
                                     for r in fleet.get("instances", ()))

        await wait_until(silent, 15, 0.1, what="b not heard from within the lease")
    env = {"KILLGATE_ADMIN_URL": a.admin,
           "KILLGATE_TOKEN": AUTH["Authorization"].split(" ", 1)[1]}
    took = await asyncio.to_thread(cli, "kill", "--route", "iris", "--version", "v2",
                                   "--reason", "garbage", "--local", "--wait", "0s", env=env)
    assert took.returncode == 0 and took.stdout.startswith("killed version:iris:v2"), took
    assert "not heard from within the lease" in took.stderr and gone in took.stderr, took


@pytest.mark.timeout(60)
async def test_an_alerts_local_kill_merged_carries_the_alerts_evidence(
        tmp_path: Path, backends: Any, session: ClientSession,
        redis_server: RedisServer) -> None:
    """An alert's kill taken locally (the store down) was merged with an audit event
    without the alert's evidence (labels, generatorURL, ...) that the same kill through
    the store carries: now the journal keeps it (signed, bounded) and the merge passes it
    through."""
    from tests.conftest import running_gateway, two_versions, write_config
    from tests.test_alerting import payload
    from tests.test_alerts import _audit, _post

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50),
                       state=redis_state(redis_server, tmp_path, "a"),
                       extra="alerts:\n  alertmanager: {}\n")
    local = payload(killgate_action="kill", route="iris", version="v2")
    stored = payload(killgate_action="kill", route="iris", version="v1")
    stored["alerts"][0]["fingerprint"] = "0000000000000009"
    async with running_gateway(cfg) as g:
        redis_server.kill()
        status, answer = await _post(session, g.admin, local)
        assert status == 200 and answer["actions"][0]["outcome"] == "local", answer
        redis_server.start()

        async def merged() -> dict[str, Any] | None:
            found = [e for e in await _audit(session, g.admin)
                     if e["action"] == "kill" and "local" in e]
            return found[0] if found else None

        ev = await wait_until(merged, 20, 0.1, what="the alert's local kill merged")
        status, answer = await _post(session, g.admin, stored)  # (the store's path)
        assert status == 200 and answer["actions"][0]["outcome"] == "acted", answer
        normal = next(e for e in await _audit(session, g.admin)
                      if e["action"] == "kill" and "local" not in e)
    sent = local["alerts"][0]
    assert "evidence" in ev, ev
    assert ev["evidence"]["alert"]["labels"] == sent["labels"]
    assert ev["evidence"]["alert"]["generatorURL"] == sent["generatorURL"]
    assert ev["evidence"]["alert"]["fingerprint"] == sent["fingerprint"]
    assert set(ev["evidence"]) == set(normal["evidence"]), (ev, normal)
    assert set(ev["evidence"]["alert"]) == set(normal["evidence"]["alert"]), (ev, normal)


def test_an_entrys_evidence_is_bounded_and_an_older_entry_without_it_still_reads(
        tmp_path: Path) -> None:
    """Long annotations keep the alert's labels and generatorURL (`truncated`), so a
    journal of MAX_ENTRIES alert kills still fits; an entry written without evidence (an
    older release's, a person's kill) is read as before."""
    import json

    from gateway.state.localevidence import MAX_EVIDENCE, bounded

    big = {"alert": {"fingerprint": "f", "labels": {"version": "v2"},
                     "generatorURL": "http://prom/graph", "annotations": {"d": "x" * 10_000}},
           "groupKey": "g"}
    small = bounded(big)
    assert small == {"alert": {"fingerprint": "f", "labels": {"version": "v2"},
                               "generatorURL": "http://prom/graph"}, "truncated": True}
    assert bounded({"alert": {"fingerprint": "f", "labels": {"x": "y" * 10_000}}}) == {
        "alert": {"fingerprint": "f"}, "truncated": True}
    assert bounded({"alert": {"fingerprint": "f"}}) == {"alert": {"fingerprint": "f"}}
    path = tmp_path / "snap.json.local-kills"
    journal = LocalKills(path, _keys(STATE_KEY))
    journal.add(LocalEntry.new("version", "iris", "v2", "alertmanager/k", "r", "t", "a", 3,
                               True, big))
    journal.add(LocalEntry.new("route", "wine", None, "alice", "r", "t", "a", 3, True))
    body = json.loads(path.read_bytes().partition(b"\n")[2])
    assert "evidence" not in body["kills"][1]  # (the older shape, as an older release reads)
    again = LocalKills(path, _keys(STATE_KEY)).read()
    assert again[0].evidence == small and again[1].evidence is None
    assert len(json.dumps(again[0].evidence)) <= MAX_EVIDENCE
