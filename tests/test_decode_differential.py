"""decode_doc (state/store.py) against the reader it replaced, over raw bytes: a signed
document is verified over its bytes, then read by pydantic's JSON reader (json.loads +
StateDoc.from_json when that one refuses them). Bytes json.dumps never writes are the
point here: duplicate keys (the last wins in both?), NaN/Infinity literals, 1e400, ints of
thousands of digits, lone surrogate escapes, a BOM, trailing bytes, deep nesting, bytes
that are no UTF-8, in every field of a document. Same document, or a ValueError from both
(the kill path catches ValueError: any other exception would be a kill lost)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.statedoc import HistoryEntry, KillFlag, RouteOverride, StateDoc
from gateway.state.store import decode_doc

SAMPLE = StateDoc(
    generation=7, epoch="e1", audit_head="ab", audit_seq=3,
    kills={"version:iris:v2": KillFlag("version", "iris", "v2", "alice", "r", "t", 5)},
    overrides={"llm": RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "bob", "r", "t",
                                    "rollback")},
    history={"iris": (HistoryEntry("v1", "t", "a", "r", "http://127.0.0.1:1", None, 3),)},
    identities={"iris": {"v1": {"url": "http://127.0.0.1:1", "artifact": None, "time": "t"}}},
    progress={"iris": {"canary": "v2", "step": 1, "since": 12.5, "state": "running"}},
    approvals={"a1": {"n": 1}}, lineage={"e0": 4}, writes=("6:x", "7:y"),
    lifted={"route:iris": 2}, lifted_writes={"route:iris": ("2:z",)},
).to_json()

#: literal tokens only a hand (or another writer) puts in a document
ODD = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"-0", b"-0.0",
       b"1.0", b"5e0", b"9" * 30, b"9" * 4300, b"9" * 4301, b"true", b"null", b'"\\ud800"',
       b'"\\udc00x"', b'"\\u0000"', b'"\xff"', b'"\xc3"', b'"7"', b'"1e400"', b"[]", b"{}",
       b"[" * 300 + b"]" * 300, b'{"a":' * 300 + b"1" + b"}" * 300, b'"' + b"x" * 70 + b'"']


class _Enc:
    """A value as JSON bytes, one or two of its nodes (drawn) made odd: an odd token in
    place of the value, or a key written twice (its value again, or an odd token)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data, self.node = data, 0
        self.sites = set(data.draw(st.lists(st.integers(0, 90), min_size=1, max_size=2),
                                   label="odd nodes"))

    def __call__(self, value: Any) -> bytes:
        self.node += 1
        odd = self.node in self.sites
        draw = self.data.draw
        if odd and (not isinstance(value, dict) or not value or draw(st.booleans())):
            return draw(st.sampled_from(ODD), label="odd token")
        if isinstance(value, dict):
            items = [(k, self(v)) for k, v in value.items()]
            if odd:
                k, _ = draw(st.sampled_from(items), label="key twice")
                again = (draw(st.sampled_from(ODD), label="its odd value")
                         if draw(st.booleans()) else json.dumps(value[k]).encode())
                items.insert(draw(st.integers(0, len(items)), label="at"), (k, again))
            return b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in items) + b"}"
        if isinstance(value, list):
            return b"[" + b",".join(self(v) for v in value) + b"]"
        return json.dumps(value).encode()


def _old(body: bytes) -> StateDoc | str:
    try:
        return StateDoc.from_json(json.loads(body))
    except (ValueError, RecursionError):  # (decode_doc's own fallback turns the latter)
        return "refused"


def _new(body: bytes) -> StateDoc | str:
    try:
        return decode_doc(body)
    except ValueError:
        return "refused"


@given(st.data())
@settings(max_examples=100, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_any_bytes_decode_as_the_two_step_reader_decodes_them(data: st.DataObject) -> None:
    body = _Enc(data)(SAMPLE)
    body = data.draw(st.sampled_from([b"", b"\xef\xbb\xbf", b" \n"]), label="before") + body
    body += data.draw(st.sampled_from([b"", b" \n", b" x", b"{}", b"\x00"]), label="after")
    want, got = _old(body), _new(body)
    assert got == want or (isinstance(got, StateDoc) and repr(got) == repr(want)), body[:300]
