"""Property tests (hypothesis) for two rows of RELIABILITY.md.

Row 20, duplicate and reordered state events: whatever order documents arrive in, and
however often each one arrives, an instance enforces the newest generation it has seen,
never goes back to an older one, and its routing table says exactly what that document
says (an unkill that overtakes its kill is not undone by the late kill, and vice versa).

The same row, from the other side: whatever a store holds or a push carries (a corrupt or
foreign document), `StateDoc.from_json` returns a well-typed document or raises ValueError
(which the stores report as "unavailable": the instance keeps its last-known state), and a
document it accepts always builds a routing table that can route.

Row 26, config parser fuzz: whatever the file holds, `parse_config_text` returns a valid
config or raises `ConfigError` naming every problem, never another exception. The inputs
are arbitrary text, byte-level edits of the example files, and structural mutations of
them (values replaced by other types, keys dropped or invented, lists emptied or grown),
so that most cases reach the validator rather than stop at the YAML parser. The fixed seed
corpus is `tests/data/config/invalid/` (test_config.py). A longer random campaign:
`KILLGATE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_properties.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config
from gateway.configfile import LoadedConfig, parse_config_text
from gateway.control.table import TableHolder
from gateway.domain.statedoc import (
    HistoryEntry,
    KillFlag,
    NewerDocument,
    RouteOverride,
    StateDoc,
    kill_key,
)
from gateway.domain.tablebuild import build_table
from gateway.errors import ConfigError
from gateway.state import store
from gateway.state.store import decode_doc
from tests.conftest import two_versions

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TEXTS = [p.read_text() for p in sorted((ROOT / "config").glob("*.yaml"))]
EXAMPLES = [yaml.safe_load(t) for t in EXAMPLE_TEXTS]
# CI runs a fixed, derandomised set of examples (a red build is then reproducible);
# KILLGATE_FUZZ_EXAMPLES=N runs a random campaign of N examples per test instead. (60: the
# fixed set still finds `listen: null`, the bug the first campaign found; 150 took 30 s.)
_CAMPAIGN = int(os.environ.get("KILLGATE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_CAMPAIGN or 60, derandomize=not _CAMPAIGN, database=None,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- row 20

KILL_KEYS = ["global", kill_key("route", "iris"), kill_key("version", "iris", "v1"),
             kill_key("version", "iris", "v2")]


def _holder() -> TableHolder:
    text = ("listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n"
            "state: {backend: local, path: /nonexistent/store.json}\nroutes:\n"
            + "\n".join("  " + line for line in two_versions(1, 2, 50, 50).splitlines()))
    return TableHolder(LoadedConfig(parse_config_text(text), "sha256:test", None))


def _doc(generation: int, keys: frozenset[str]) -> StateDoc:
    flags = {}
    for key in keys:
        scope, _, rest = key.partition(":")
        route, _, version = rest.partition(":")
        flags[key] = KillFlag(scope, route or None, version or None,  # type: ignore[arg-type]
                              "alice", "r", "t", generation)
    return StateDoc(generation=generation, kills=flags)


@given(st.data())
@FUZZ
def test_any_order_and_any_duplicates_end_on_the_newest_document(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12), label="documents")
    docs = {g: _doc(g, data.draw(st.frozensets(st.sampled_from(KILL_KEYS)), label=f"kills {g}"))
            for g in range(1, n + 1)}
    repeats = data.draw(st.lists(st.integers(1, n), max_size=2 * n), label="duplicates")
    arrivals = data.draw(st.permutations([*range(1, n + 1), *repeats]), label="arrivals")
    holder = _holder()
    newest = 0
    for g in arrivals:
        applied = holder.apply_doc(docs[g])
        assert applied == (g > newest)  # older and duplicate documents are no-ops
        newest = max(newest, g)
        doc = docs[newest]
        assert holder.doc is doc
        plan = holder.table.by_name["iris"]
        assert plan.killed == ("global" if "global" in doc.kills
                               else "route" if "route:iris" in doc.kills else None)
        assert {v for v, why in plan.excluded.items() if why == "killed"} == {
            v for v in ("v1", "v2") if f"version:iris:{v}" in doc.kills}
    assert holder.doc.generation == n


def _progressive_config() -> Config:
    """Two routes: `iris` in a progressive rollout, `llm` under a latched override."""
    analysis = "analysis: {window: 1s, interval: 200ms, steps: [10, 50, 100]}\n"
    routes = (two_versions(1, 2, 90, 10, analysis)
              + two_versions(3, 4, 90, 10, name="llm", prefix="/v1/llm"))
    text = ("listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n"
            "state: {backend: local, path: /nonexistent/store.json}\nroutes:\n"
            + "\n".join("  " + line for line in routes.splitlines()))
    return parse_config_text(text)


PROGRESSIVE = _progressive_config()
SAMPLE_DOC = StateDoc(
    generation=7, epoch="e1",
    kills={"version:iris:v2": KillFlag("version", "iris", "v2", "alice", "r", "t", 5)},
    overrides={"llm": RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "bob", "r", "t",
                                    "rollback")},
    history={"iris": (HistoryEntry("v1", "t", "a", "r", "http://127.0.0.1:1", None, 3),
                      HistoryEntry("v2", "t", "a", "r", None, "sha256:ab", 4))},
    identities={"iris": {"v1": {"url": "http://127.0.0.1:1", "artifact": None, "time": "t"}}},
    progress={"iris": {"canary": "v2", "step": 1, "since": 12.5, "state": "running"}},
).to_json()
DOC_KEYS = sorted({"generation", "epoch", "kills", "overrides", "history", "identities",
                   "progress", "scope", "route", "version", "actor",
                   "reason", "time", "abort_inflight", "stable", "weights", "kind", "url",
                   "artifact", "canary", "step", "since", "state", "audit_head"})


def test_a_valid_document_survives_the_round_trip_unchanged() -> None:
    doc = StateDoc.from_json(SAMPLE_DOC)
    assert doc.to_json() == SAMPLE_DOC
    table = build_table(PROGRESSIVE, doc)
    assert table.by_name["iris"].weights == {"v1": 50.0, "v2": 50.0}  # step 1 of 10/50/100
    assert table.by_name["llm"].weights == {"v1": 100.0, "v2": 0.0}  # the override
    # a newer writer's field is refused as its own (statedoc.FORMAT's rule), never dropped
    with pytest.raises(NewerDocument):
        StateDoc.from_json({**SAMPLE_DOC, "future_field": 1})
    assert StateDoc.from_json({**SAMPLE_DOC, "audit_head": "ab"}).audit_head == "ab"


@given(st.data())
@FUZZ
def test_any_stored_document_is_a_valid_state_or_a_value_error(data: st.DataObject) -> None:
    raw = _mutate(data, SAMPLE_DOC, DOC_KEYS)
    try:
        doc = StateDoc.from_json(raw)
    except ValueError as exc:
        assert str(exc).startswith("not a valid state document: ")
        return
    for fail_closed in (False, True):
        table = build_table(PROGRESSIVE, doc, frozenset({("iris", "v1")}), fail_closed)
        for route in ("iris", "llm"):
            assert table.by_name[route].choose("user-1", "v2", lambda: 0.5).decision
    holder = TableHolder(LoadedConfig(PROGRESSIVE, "sha256:test", None))
    holder.apply_doc(doc)


@given(st.data())
@FUZZ
def test_a_pushed_document_reads_as_the_two_step_decoder_reads_it(data: st.DataObject) -> None:
    """decode_doc reads the bytes in one pass (StateDoc.from_json_bytes) and falls back to
    json.loads + from_json when that refuses them: same document, or same ValueError."""
    raw = json.dumps(_mutate(data, SAMPLE_DOC, DOC_KEYS)).encode()  # (NaN, lone surrogates...)
    try:
        want: StateDoc | str = StateDoc.from_json(json.loads(raw))
    except ValueError as exc:
        want = str(exc)
    try:
        got: StateDoc | str = decode_doc(raw)
    except ValueError as exc:
        got = str(exc)
    assert got == want or (isinstance(got, StateDoc) and repr(got) == repr(want))  # (nan)


def test_a_document_is_read_in_one_pass_and_what_that_refuses_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(SAMPLE_DOC).encode()
    with monkeypatch.context() as m:
        m.setattr(store.json, "loads", _no_second_pass)
        assert decode_doc(body) == StateDoc.from_json(SAMPLE_DOC)  # no json.loads on the way
    odd = json.dumps({**SAMPLE_DOC, "epoch": "\ud800"}).encode()  # one pass refuses it
    assert decode_doc(odd).epoch == "\ud800"
    assert decode_doc(b"\xef\xbb\xbf" + body) == StateDoc.from_json(SAMPLE_DOC)
    with pytest.raises(ValueError, match=r"^not a valid state document: generation: "):
        decode_doc(json.dumps({**SAMPLE_DOC, "generation": -1}).encode())
    with pytest.raises(ValueError, match=r"^Expecting value"):  # (json.loads' words, as before)
        decode_doc(b"{\"generation\": }")


def test_with_changes_is_dataclasses_replace() -> None:
    """StateDoc.with_changes builds the copy itself (half the instructions): the same
    document as dataclasses.replace for every field, and the same refusal of an unknown."""
    doc = StateDoc.from_json(SAMPLE_DOC)
    for name, value in (("generation", 9), ("audit_head", "ab"), ("kills", {}),
                        ("writes", ("9:a",)), ("epoch", "e2")):
        assert doc.with_changes(**{name: value}) == dataclasses.replace(doc, **{name: value})
    assert doc.with_changes() == doc and doc.with_changes() is not doc
    # every field, each to a value of its own (with_changes names each field by hand)
    marks = {f.name: object() for f in dataclasses.fields(StateDoc)}
    for name, mark in marks.items():
        got = doc.with_changes(**{name: mark})
        assert got == dataclasses.replace(doc, **{name: mark}), name
    every = doc.with_changes(**marks)
    assert all(getattr(every, n) is m for n, m in marks.items())
    with pytest.raises(TypeError):
        doc.with_changes(no_such_field=1)


def test_the_table_swap_carries_every_field_of_held() -> None:
    """TableHolder._swap builds Held positionally from a list of its inputs (no
    dataclasses.replace): a field added to Held and not to that list would be reset to its
    default at every swap (a kill's), silently."""
    from gateway.control import table as tablemod

    names = [f.name for f in dataclasses.fields(tablemod.Held)]
    assert set(names) == tablemod._INPUTS | {"table"}
    assert names == ["loaded", "doc", "unhealthy", "fail_closed", "state_unknown", "table",
                     "ejected", "local"]  # (the order _swap passes them in)


def _no_second_pass(*_: object, **__: object) -> None:
    raise AssertionError("json.loads was called: the document was parsed twice")


# --------------------------------------------------------------------------- row 26

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.sampled_from(["1s", "-5ms", "0", "100%", "http://127.0.0.1:1", "v1",
                                     "stable", "127.0.0.1:0", "::1", "", " "]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(map(str, node)) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


KNOWN_KEYS = sorted(set().union(*(_keys(e) for e in EXAMPLES)))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(data: st.DataObject, doc: Any, names: list[str]) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        path = data.draw(st.sampled_from(_paths(doc)), label="at")
        if not path:
            return data.draw(VALUES, label="whole document")
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        action = data.draw(st.sampled_from(["replace", "drop", "add key", "duplicate"]))
        if action == "replace":
            parent[key] = data.draw(VALUES, label="value")
        elif action == "drop":
            del parent[key]
        elif action == "add key" and isinstance(parent[key], dict):
            name = data.draw(st.sampled_from(names) | st.text(max_size=8), label="key")
            parent[key][name] = data.draw(VALUES, label="value")
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return doc


def _parses_or_explains(text: str) -> None:
    try:
        cfg = parse_config_text(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems, "a ConfigError must name at least one problem"
        assert all(str(p).strip() for p in exc.problems)
    else:
        assert isinstance(cfg, Config)


@given(st.text(max_size=400))
@FUZZ
def test_arbitrary_text_is_a_config_or_a_config_error(text: str) -> None:
    _parses_or_explains(text)


@given(st.data())
@FUZZ
def test_edited_example_text_is_a_config_or_a_config_error(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(EXAMPLE_TEXTS), label="example")
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        at = data.draw(st.integers(0, len(text)), label="offset")
        cut = data.draw(st.integers(0, 20), label="deleted")
        text = text[:at] + data.draw(st.text(max_size=12), label="inserted") + text[at + cut:]
    _parses_or_explains(text)


@given(st.data())
@FUZZ
def test_mutated_example_is_a_config_or_a_config_error(data: st.DataObject) -> None:
    doc = _mutate(data, data.draw(st.sampled_from(EXAMPLES), label="example"), KNOWN_KEYS)
    _parses_or_explains(yaml.safe_dump(doc, allow_unicode=True))
