"""What a redis commit sends, written by the cheaper writers (impkill2: 532k → ~334k
instructions a kill's commit, benchmarks/kill_instructions.py) against the json.dumps calls
they replaced: the signed document (state/store.encode_doc), the event as stored
(audit.event_json), the bytes the event's hash is over (audit.canonical: the same bytes,
CONTRACT §4) and the event id (a version 4 UUID's hex). Over drawn values: any text (control
characters, line separators, non-ASCII, lone surrogates), floats of every form (1e-07,
1e+16, NaN, infinities), huge ints, nested values in the fields that hold any JSON."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.audit import (
    AuditDraft,
    _new_id,
    canonical,
    event_hash,
    event_json,
    genuine,
    parse_event,
    seal,
    seal_json,
)
from gateway.domain.statedoc import HistoryEntry, KillFlag, RouteOverride, StateDoc
from gateway.state.store import decode_doc, encode_doc

TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1e-07, 1e16, 1e+16, 5e-324, 0.1, -0.0, 1e308, 123456789.125])
SCALARS = st.none() | st.booleans() | st.integers(-(10 ** 40), 10 ** 40) | FLOATS | TEXT
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(TEXT, kids, max_size=3), max_leaves=12)
SETTINGS = settings(max_examples=60, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _same_json(a: bytes, b: bytes) -> bool:
    """The same JSON value, keys in the same order (NaN equal to NaN)."""
    return json.dumps(json.loads(a)) == json.dumps(json.loads(b))


def _doc(d: st.DrawFn) -> StateDoc:
    text, value = (lambda: d(TEXT)), (lambda: d(VALUES))
    weight = d(st.floats(0, 100) | st.sampled_from([1e-07, 33.333333333333336]))
    return StateDoc(
        generation=d(st.integers(0, 2 ** 53 - 1)), epoch=text(), audit_head=text(),
        audit_seq=d(st.integers(0, 10 ** 12)),
        kills={text(): KillFlag("version", text(), text(), text(), text(), text(),
                                d(st.integers(0, 2 ** 53 - 1)), d(st.booleans()), text())},
        overrides={text(): RouteOverride(None, {text(): weight}, text(), text(), text(),
                                         "weights")},
        history={text(): (HistoryEntry(text(), text(), text(), text(), None, text(), 3),)},
        identities={text(): {text(): {"url": text(), "artifact": value(), "time": text()}}},
        progress={text(): {"canary": text(), "step": 1, "since": d(FLOATS), "state": text(),
                           text(): value()}},  # type: ignore[misc]
        drill_results={text(): {text(): value()}}, approvals={text(): {text(): value()}},
        lineage={text(): 4}, writes=(text(), text()), lifted={text(): 2},
        lifted_writes={text(): (text(),)})


@given(st.data())
@SETTINGS
def test_a_document_is_written_as_json_dumps_wrote_its_value(data: st.DataObject) -> None:
    plain = _doc(data.draw).to_json()
    try:
        want: bytes | None = json.dumps(plain).encode()
    except (ValueError, TypeError):
        want = None
    got = encode_doc(plain)  # (never refuses: json.dumps's own bytes when its writer does)
    assert want is not None and _same_json(got, want), plain
    # ... and read back as the same document as the old bytes are
    old, new = decode_doc(want), decode_doc(got)
    assert new == old or repr(new) == repr(old)


def test_a_lone_surrogate_is_written_as_json_dumps_writes_it() -> None:
    plain = StateDoc(generation=2, kills={"route:r": KillFlag(
        "route", "r", None, "alice", "why \ud800", "t", 2)}).to_json()
    assert encode_doc(plain) == json.dumps(plain).encode()
    assert decode_doc(encode_doc(plain)).kills["route:r"].reason == "why \ud800"


@given(st.dictionaries(TEXT, VALUES, max_size=6), st.booleans())
@SETTINGS
def test_an_event_is_stored_and_hashed_as_before(extra: dict[str, Any], keyed: bool) -> None:
    ev = AuditDraft("alice", "weights", {"route": "r"}, "why", {"w": 1e-07},
                    {"w": float("nan")}, extra=extra).as_event()
    try:
        want = json.dumps({k: v for k, v in ev.items() if k not in ("hash", "mac")},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: never sealed, before as now
        with pytest.raises(UnicodeEncodeError):
            seal(ev, "0" * 64, ("k1", b"s" * 32) if keyed else None)
        return
    assert canonical(ev) == want
    sealed = seal(ev, "0" * 64, ("k1", b"s" * 32) if keyed else None)
    assert sealed["hash"] == event_hash(sealed)
    # stored: the hash's own bytes, hash and MAC after them (keys sorted since revmerge32);
    # the same value json.dumps wrote, and it verifies as read back
    stored = event_json(sealed)
    assert json.dumps(json.loads(stored), sort_keys=True) == json.dumps(sealed, sort_keys=True)
    assert seal_json(ev, "0" * 64, ("k1", b"s" * 32) if keyed else None)[1][-150:] \
        == stored[-150:]  # (one serialisation: seal_json's own; the id and time alike)
    back = parse_event(stored)
    assert back is not None and event_hash(back) == sealed["hash"]


def test_an_event_id_is_a_version_4_uuid() -> None:
    ids = {_new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for i in list(ids)[:200]:
        u = uuid.UUID(hex=i)
        assert (u.hex, u.version, u.variant) == (i, 4, uuid.RFC_4122)
    # every other bit is random: each of the 128 bits but the 6 fixed ones varies
    bits = [int(i, 16) for i in ids]
    varies = sum(1 for b in range(128) if 0 < sum((x >> b) & 1 for x in bits) < len(bits))
    assert varies == 122 and not math.isnan(varies)


@pytest.mark.parametrize("key", [None, float("inf"), float("-inf"), float("nan")],
                         ids=["None", "inf", "-inf", "nan"])
def test_a_stored_event_verifies_whatever_its_keys(key: Any) -> None:
    """Found by review (revmerge32): the event as stored was written by pydantic-core, the
    hash over json.dumps's form; they name a None key "None" and "null", an infinite one
    "inf" and "Infinity". The verifier hashes the stored event as it reads it back: a
    genuine event (an `after` holding such a key) read as tampered with, forever."""
    from gateway.state.rediscommit import seal_commit
    from tests.staterig import state_keys
    ev = AuditDraft("alice", "weights", {"route": "r"}, "why", None, {"w": {key: 1}}
                    ).as_event()
    sealed, _, stored = seal_commit(state_keys(), StateDoc().to_json(), ev, "0" * 64, 0,
                                    ("k1", b"s" * 32))
    assert sealed is not None
    back = parse_event(stored)
    assert back is not None and back["hash"] == sealed["hash"]
    assert genuine(back, {"k1": b"s" * 32}), stored
