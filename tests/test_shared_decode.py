"""A pushed document decoded sharing what it has of the last one (state/shareddecode.py)
is the document `decode_doc` reads, and which routes changed (`_changed_routes`, the
swap's) is answered the same on it: a route missed keeps its old plan, a kill or a
rollback not enforced on every instance that received it. Random sequences of changes
(kills of every scope and their lifts, overrides and rollouts set, set again to the same
values, released; history appended past its bound; versions rolled off), pushed in order,
replayed and jumped back, their JSON respelt (routes reordered, 3 as 3.0, true as 1,
fields a newer writer adds); a real redis push between two stores."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain import statedoc
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import (
    Change,
    HistoryEntry,
    KillFlag,
    NewerDocument,
    RouteOverride,
    StateDoc,
    apply_change,
)
from gateway.domain.tablebuild import _changed_routes
from gateway.state import shareddecode
from gateway.state.shareddecode import SharedDecoder
from gateway.state.store import decode_doc
from tests.conftest import RedisServer, wait_until
from tests.staterig import two_stores
from tests.test_changed_routes import CHANGES, full

pytestmark = pytest.mark.timeout(30)

T = "2026-12-06T08:00:00.000Z"
KEYED = [f.name for f in fields(StateDoc) if str(f.type).startswith("dict[")]


def _spelt(plain: dict[str, Any], draw: Any) -> bytes:
    """`plain` (a document's JSON form) as another writer may spell it: each part's keys
    in another order, integral numbers as floats and back, a flag as 1, parts unknown here."""
    rnd = draw(st.randoms(use_true_random=False))
    out = dict(plain)
    for name in KEYED:
        if draw(st.booleans()):
            items = list(out[name].items())
            rnd.shuffle(items)
            out[name] = dict(items)
    if draw(st.booleans()):
        out["history"] = {r: [{**e, "generation": float(e["generation"])} for e in es]
                          for r, es in out["history"].items()}
        out["overrides"] = {r: {**o, "weights": {v: int(w) for v, w in o["weights"].items()}}
                            for r, o in out["overrides"].items()}
        out["kills"] = {k: {**f, "abort_inflight": int(f["abort_inflight"])}
                        for k, f in out["kills"].items()}
    if draw(st.booleans()):
        out["newer_part"] = {"r0": [1, 2]}
        out["progress"] = {r: {**p, "newer": "x"} for r, p in out["progress"].items()}
    return json.dumps(out).encode()


@pytest.fixture
def _small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statedoc, "MAX_HISTORY", 4)  # (trimmed: same length, other entries)
    monkeypatch.setattr(shareddecode, "SMALL", 0)  # (every document shared, however small)


@given(st.data())
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_shared_decode_is_the_whole_decode(_small: None, data: st.DataObject) -> None:
    draw = data.draw
    docs = [StateDoc(generation=1)]
    for _ in range(draw(st.integers(1, 12))):
        docs.append(apply_change(docs[-1], draw(st.sampled_from(CHANGES))(draw)))
    # pushed in order, then replays and jumps back (a stale re-read, another branch)
    order = [*range(len(docs)), *draw(st.lists(st.integers(0, len(docs) - 1), max_size=6))]
    decoder = SharedDecoder()
    held = held_whole = None
    for i in order:
        body = _spelt(docs[i].to_json(), draw)
        try:
            whole = decode_doc(body)
        except NewerDocument as exc:  # (a newer writer's part: refused alike, and the
            with pytest.raises(NewerDocument) as refused:  # next document read whole)
                decoder.decode(body)
            assert str(refused.value) == str(exc)
            held = held_whole = None
            continue
        got = decoder.decode(body)
        assert got == whole
        for name in KEYED:  # each part's keys in the order pushed
            assert list(getattr(got, name)) == list(getattr(whole, name)), name
        if held is not None:
            assert held_whole is not None
            assert _changed_routes(held, got) == full(held_whole, whole)
        held, held_whole = got, whole


def _big(routes: int = 60) -> StateDoc:
    """A deployment's document: `routes` routes of 5 history entries (~45 KB)."""
    return StateDoc(generation=1, history={f"r{i}": tuple(
        HistoryEntry("v1" if j % 2 else "v2", T, "alice", f"step {j} of r{i}", "http://x")
        for j in range(5)) for i in range(routes)})


def _body(doc: StateDoc) -> bytes:
    return json.dumps(doc.to_json()).encode()


def test_a_kill_shares_every_route_it_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver's kill, then a rollback of r9: the routes neither touches are the held
    document's own objects, and the swap compares no history entry but r9's (every one of
    the 300 before: decoded whole, the documents shared nothing). Fails without it."""
    doc = _big()
    assert len(_body(doc)) >= shareddecode.SMALL
    flag = KillFlag("version", "r7", "v2", "alice", "bad", T, 0)
    kill = apply_change(doc, Change(kills={"version:r7:v2": flag}))
    ov = RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "bob", "rb", T, "rollback")
    rollback = apply_change(kill, Change(overrides={"r9": ov}, history={
        "r9": (HistoryEntry("v1", T, "bob", "rollback"),)}))
    decoder = SharedDecoder()
    held, killed, rolled = (decoder.decode(_body(d)) for d in (doc, kill, rollback))
    assert killed.history is held.history
    assert all(rolled.history[r] is killed.history[r] for r in rolled.history if r != "r9")
    compared: list[object] = []
    eq = HistoryEntry.__eq__

    def counting(self: HistoryEntry, other: object) -> Any:
        compared.append(self)
        return eq(self, other)

    monkeypatch.setattr(HistoryEntry, "__eq__", counting)
    assert _changed_routes(held, killed) == {"r7"}
    assert _changed_routes(killed, rolled) == {"r9"}
    assert len(compared) <= 5, len(compared)


def test_what_it_cannot_read_is_refused_as_decode_doc_refuses_it() -> None:
    """A document refused after one read: decode_doc's error, word for word; the next
    good one is read whole (nothing kept of the refused one, nor of the one before)."""
    decoder = SharedDecoder()
    good = _big()
    decoder.decode(_body(good))
    broken = good.to_json()
    broken["history"]["r3"][1]["stable"] = 7
    for body in (json.dumps(broken).encode(), b"[" + _body(good) + b"]",
                 _body(good)[:-1], json.dumps({**good.to_json(), "generation": -1}).encode()):
        with pytest.raises(ValueError) as whole:
            decode_doc(body)
        with pytest.raises(ValueError) as got:
            decoder.decode(body)
        assert str(got.value) == str(whole.value)
    newer = apply_change(good, Change(history={"r3": (HistoryEntry("v2", T, "c", "d"),)}))
    assert decoder.decode(_body(newer)) == newer


async def test_a_pushed_kill_shares_what_it_leaves_on_the_receiving_store(
        redis_server: RedisServer) -> None:
    """Real redis, two stores: b commits a deployment's document, then a kill; a hears
    both pushed and holds the kill's with the first one's history, the same objects."""
    async with two_stores(redis_server, "kgshared", listen=True) as pair:
        doc = _big()
        await pair.b.commit(None, doc, AuditDraft("alice", "seed", {}, ""))
        flag = KillFlag("version", "r7", "v2", "alice", "bad", T, 0)
        kill = apply_change(doc, Change(kills={"version:r7:v2": flag}))
        await pair.b.commit("1", kill, AuditDraft("alice", "kill", {"route": "r7"}, "bad"))
        docs = lambda: [d for d in pair.got if isinstance(d, StateDoc)]  # noqa: E731
        await wait_until(lambda: [d.generation for d in docs()][-2:] == [1, 2], 5,
                         what="both documents pushed to a")
        first, second = docs()[-2:]
        assert second.kills.keys() == {"version:r7:v2"} and not first.kills
        assert second.history is first.history and second.history == doc.history
        assert pair.refused == []


@pytest.mark.parametrize("part", ["approvals", "drill_results", "identities", "progress"])
def test_a_free_form_record_keeps_its_own_spelling(part: str) -> None:
    """A record whose values the document keeps as written (an approval, a drill's result,
    an identity: `Any`; a rollout's keys a newer writer added): `true` after `1`, or `1.0`
    after `1`, is what the bytes say, as `decode_doc` reads it, not the last document's
    value (equal by ==, not the same JSON: re-written, signed and read by the approvals'
    own checks as the other type). Failed before: the shared decode kept the last's 1."""
    doc = _big()
    value: dict[str, Any] = {"a": {"format": 1, "n": 1, "ok": 1}}
    if part == "identities":
        value = {"r1": value}
    first = StateDoc.from_json({**doc.to_json(), part: value})
    respelt = json.loads(json.dumps(value).replace('"ok": 1', '"ok": true')
                         .replace('"n": 1', '"n": 1.0'))
    second = StateDoc.from_json({**doc.to_json(), "generation": 2, part: respelt})
    decoder = SharedDecoder()
    decoder.decode(_body(first))
    got = decoder.decode(_body(second))
    assert json.dumps(got.to_json()) == json.dumps(decode_doc(_body(second)).to_json())
