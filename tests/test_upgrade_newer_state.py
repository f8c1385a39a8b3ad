"""A rolling upgrade: the state document a NEWER killgate writes into the shared redis
(signed with the fleet's key, as that version's commit is), with what this version does
not know: applied faithfully or refused loudly, never applied with the unknown part
dropped (domain/statedoc.FORMAT's rule). Found at stop 38 (impupgrade): a field this
version did not know (a kill flag's, or a new top-level part) was silently ignored, and
this instance's next write dropped it from the fleet's state; a new kind of kill (a kill
scope it does not know) read as an invalid document, counted as tampering, and re-seeded
over: the newer version's kill dropped from the store. Now such a document is refused as
a newer version's: not applied, not counted as tamper, never written over (a write here
answers 503 state_from_newer_version), the state held stays in force."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, running_gateway, two_versions, wait_until, write_config
from tests.staterig import redis_state
from tests.test_forgery import plant, stored_doc
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)


def _newer_kill(generation: int) -> dict[str, Any]:
    return {"scope": "model", "route": None, "version": None, "model": "gpt-small",
            "actor": "alice", "reason": "newer kill", "time": "2026-12-06T10:00:00.000Z",
            "generation": generation, "abort_inflight": True, "write": ""}


def _newer_docs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What a newer version may write on the document as stored: a field of a kill flag
    and a new part, without a format bump; a new kind of kill, with one."""
    gen = doc["generation"] + 1
    flags = {k: {**v, "until": "2026-12-07T00:00:00Z"} for k, v in doc["kills"].items()}
    return {
        "unknown fields": {**doc, "generation": gen, "kills": flags,
                           "quarantines": {"iris": {"actor": "alice"}}},
        "a new kind of kill": {**doc, "generation": gen, "format": 2,
                               "kills": {**doc["kills"], "model:gpt-small": _newer_kill(gen)}},
    }


@pytest.mark.parametrize("what", ["unknown fields", "a new kind of kill"])
async def test_a_newer_versions_document_is_refused_loudly_and_not_written_over(
        what: str, tmp_path: Path, backends, redis_server: RedisServer,
        session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        held = g.gw.holder.doc
        newer = _newer_docs(stored_doc(redis_server))[what]
        value = await asyncio.to_thread(plant, redis_server, newer)
        sync = g.gw.sync
        await wait_until(lambda: "newer version of killgate" in str(sync.last_error), 5,
                         what="the newer document judged")
        assert "this instance runs killgate" in str(sync.last_error), sync.last_error
        # a kill through this instance: refused, nothing written over the newer document
        async with session.post(g.admin + "/v1/kill", headers=bearer("killgate:kill"),
                                json={"scope": "global", "reason": "INC-2"}) as r:
            body = await r.json()
            assert (r.status, body["error"]["type"]) == (503, "state_from_newer_version"), body
            assert "Make changes through an instance of the newer version" in \
                body["error"]["message"], body
        for _ in range(3):  # (polls and sync attempts go on: never a re-seed)
            await asyncio.sleep(0.2)
            assert redis_server.cmd("GET", "kgtest:state") == value
        # not applied, and the state held stays in force; no tampering counted
        assert g.gw.holder.doc == held and "version:iris:v2" in g.gw.holder.doc.kills
        assert sync.tamper.counts == {}, sync.tamper.status()
        assert g.gw.metrics.get("killgate_state_reseeds_total", ()) in (0, None)
        async with session.get(g.admin + "/v1/status", headers=bearer("killgate:read")) as r:
            status = await r.json()
        assert status["store"]["connected"] is False, status["store"]
        assert json.loads(redis_server.cmd("GET", "kgtest:state").split("\n", 1)[1]) == newer
        # the way out for a fleet rolled back to this version (README, Upgrading): the state
        # key deleted, the instance re-seeds the store from what it holds, and takes writes
        redis_server.cmd("DEL", "kgtest:state")
        await wait_until(lambda: sync.connected, 10, what="the store re-seeded, synced again")
        stored = stored_doc(redis_server)
        assert "version:iris:v2" in stored["kills"] and "quarantines" not in stored, stored
        async with session.post(g.admin + "/v1/kill", headers=bearer("killgate:kill"),
                                json={"scope": "global", "reason": "INC-3"}) as r:
            assert r.status == 200, await r.text()


def test_a_document_of_this_format_reads_back_and_unknown_parts_are_named() -> None:
    """Pure: this version's document round-trips with its format; a newer one's refusal
    names what is not known (or the format); an invalid one stays invalid (a forgery's
    repair still applies to it)."""
    from gateway.domain.statedoc import FORMAT, NewerDocument, StateDoc

    doc = StateDoc(generation=3)
    assert doc.to_json()["format"] == FORMAT
    assert StateDoc.from_json(doc.to_json()) == doc
    assert StateDoc.from_json({"generation": 3}) == doc  # (an older version's: no format)
    with pytest.raises(NewerDocument) as got:
        StateDoc.from_json({**doc.to_json(), "quarantines": {}, "format": FORMAT})
    assert got.value.fields == ("quarantines",)
    with pytest.raises(NewerDocument, match="format 2"):
        StateDoc.from_json({**doc.to_json(), "format": 2, "kills": {"x": {"scope": "model"}}})
    with pytest.raises(ValueError) as bad:
        StateDoc.from_json({**doc.to_json(), "kills": {"x": {"scope": "model"}}})
    assert not isinstance(bad.value, NewerDocument)


async def test_a_newer_versions_document_is_a_gauge_before_the_state_goes_stale(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    """Nothing but `last_error` said it (found by review improt2): an operator learnt that
    the store holds a document this version cannot apply only when `killgate_state_stale`
    rose, max_staleness later (KillgateStateNewerDocument watches the gauge)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))

    async def scrape(g: Any) -> dict[str, float]:
        async with session.get(g.admin + "/metrics") as r:
            text = await r.text()
        return {k: float(v) for k, v in (line.split(" ", 1) for line in text.splitlines()
                    if line.startswith(("killgate_state_newer_document ",
                                        "killgate_state_stale ")))}

    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        assert (await scrape(g))["killgate_state_newer_document"] == 0
        await asyncio.to_thread(plant, redis_server,
                                _newer_docs(stored_doc(redis_server))["a new kind of kill"])
        await wait_until(lambda: g.gw.metrics.get("killgate_state_newer_document") == 1, 5,
                         what="the newer document's gauge")
        got = await scrape(g)
        assert got == {"killgate_state_newer_document": 1, "killgate_state_stale": 0}, got
        redis_server.cmd("DEL", "kgtest:state")  # (the way out: re-seeded, synced again)
        await wait_until(lambda: g.gw.metrics.get("killgate_state_newer_document") == 0, 10,
                         what="the gauge back to 0")
