"""The committer's shortcuts before its EVALSHA (impkill9, benchmarks/RESULTS.md §54) give
what the longer ways gave, byte for byte: a MAC from a prepared HMAC's copy, an event's
stored JSON written in one pass, a frozen value copied through its slots, the lift records
shared when nothing is lifted. Pure: no loop, no sockets."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import inspect
import json

import pytest

from gateway.admin import actions, inputs
from gateway.domain import audit, auditcanon, slotted
from gateway.domain.slotted import copied
from gateway.domain.statedoc import (
    Change,
    DrillRecord,
    HistoryEntry,
    KillFlag,
    RolledOff,
    RouteOverride,
    StateDoc,
    apply_change,
    plain,
)
from gateway.domain.writeids import lifted_after, lifted_writes_after
from gateway.errors import ApiError
from gateway.state.signing import Key, Keyring

pytestmark = pytest.mark.timeout(30)

TEXTS = ["", "plain", "quote \" and \\ back", "line\nbreak\ttab\x00nul\x1f", "ü ñ 中文 🚀",
         "\u2028\u2029 \u202e", "x" * 3000]


def _old_mac(keys: Keyring, key: Key, kind: bytes, body: bytes) -> str:
    return hmac.new(key.secret, kind + b"\x00" + keys.context + b"\x00" + body,
                    hashlib.sha256).hexdigest()


@pytest.mark.parametrize("text", TEXTS)
def test_a_keyring_mac_is_the_hmac_of_kind_context_and_body(text: str) -> None:
    cur, prev = Key.of(b"c" * 32), Key.of(b"p" * 32)
    keys = Keyring(cur, prev, context="kgtest")
    body = text.encode()
    for _ in range(2):  # (the second from the prepared HMAC)
        for kind in (b"state", b"ack"):
            kid, mac = keys.sign(kind, body)
            assert (kid, mac) == (cur.kid, _old_mac(keys, cur, kind, body))
            assert keys.check(kind, body, prev.kid, _old_mac(keys, prev, kind, body)) \
                == "previous"
            assert keys.open(kind, keys.seal(kind, body)) == (body, "current")
    other = keys.bound("another")  # (another context: another MAC)
    assert other.sign(b"state", body)[1] == _old_mac(other, cur, b"state", body) \
        != keys.sign(b"state", body)[1]


def test_a_value_signed_with_another_kind_or_key_is_still_refused() -> None:
    keys = Keyring(Key.of(b"c" * 32), context="kgtest")
    sealed = keys.seal(b"state", b"{}")
    keys.open(b"state", sealed)
    with pytest.raises(ValueError, match="does not match"):
        keys.open(b"ack", sealed)
    with pytest.raises(ValueError, match="does not match"):
        Keyring(Key(keys.current.kid, b"o" * 32), context="kgtest").open(  # type: ignore[union-attr]
            b"state", sealed)


@pytest.mark.parametrize("secret", [b"k" * 32, b"another key, thirty-two bytes!!!"])
def test_an_audit_mac_is_the_hmac_of_the_hash(secret: bytes) -> None:
    for h in ("ab" * 32, "0" * 64, "not hex ü"):
        assert audit.audit_mac(secret, h) == hmac.new(
            secret, h.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def _event(text: str) -> dict[str, object]:
    return audit.AuditDraft("alice", "kill", {"scope": "route", "route": text, "version": None},
                            text, None, {"generation": 3, "abort_inflight": True, "w": 1.5},
                            "req", "127.0.0.1", extra={"n": [1, text, None]}).as_event()


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("key", [None, ("k1", b"k" * 32)])
def test_a_sealed_event_is_stored_as_its_canonical_bytes_with_hash_and_mac(
        text: str, key: tuple[str, bytes] | None) -> None:
    ev, stored = audit.seal_json(_event(text), "ab" * 32, key)
    assert stored == audit.event_json(ev) == audit._stored(audit.canonical(ev), ev)
    assert ev["hash"] == audit.event_hash(ev)
    parsed = audit.parse_event(stored)
    assert parsed == ev and audit.event_hash(parsed) == ev["hash"]
    if key is not None:
        assert audit.genuine(parsed, {key[0]: key[1]})
    else:
        assert "mac" not in ev and "kid" not in ev
    # sealed again (an event that carries a hash and MAC already): the same rule
    again, again_stored = audit.seal_json(ev, "cd" * 32, key)
    assert again_stored == audit.event_json(again)
    assert again["hash"] == audit.event_hash(again) != ev["hash"]


def _flag(gen: int = 0) -> KillFlag:
    return KillFlag("version", "bench", "v2", "alice", "why", "2026-01-01T00:00:00.000Z", gen)


def test_a_copy_through_the_slots_is_what_replace_makes() -> None:
    f = _flag()
    assert copied(f, generation=7, write="7:ab") == dataclasses.replace(
        f, generation=7, write="7:ab")
    assert copied(f) == f and copied(f) is not f
    e = HistoryEntry("v1", "t", "a", "r", "u", None, 0)
    assert copied(e, generation=3) == dataclasses.replace(e, generation=3)
    doc = StateDoc(generation=4, kills={"k": f})
    assert doc.with_changes(generation=5, epoch="e") == dataclasses.replace(
        doc, generation=5, epoch="e")
    with pytest.raises(TypeError, match="nope"):
        copied(f, nope=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        copied(f, generation=1).generation = 2  # type: ignore[misc]


def test_a_class_with_a_post_init_is_not_copied_through_its_slots() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("negative")

    with pytest.raises(TypeError, match="__post_init__"):
        copied(Checked(1), n=-1)


def test_a_kill_and_its_unkill_record_their_lifts_as_before() -> None:
    doc = StateDoc(generation=1)
    kill = apply_change(doc, Change(kills={"version:bench:v2": _flag()}))
    flag = kill.kills["version:bench:v2"]
    assert flag.generation == 2 and flag.write == kill.writes[-1]
    assert kill.lifted == {} and kill.lifted_writes == {}
    unkill = apply_change(kill, Change(kills={"version:bench:v2": None}))
    assert unkill.lifted == {"version:bench:v2": 2}
    assert unkill.lifted_writes == {"version:bench:v2": (flag.write,)}
    again = apply_change(unkill, Change(kills={"version:bench:v2": _flag()}))
    # nothing lifted: the same records, shared (documents are never mutated)
    assert again.lifted is unkill.lifted and again.lifted_writes is unkill.lifted_writes
    assert lifted_after({"a": 1}, {}, {"b": _flag()}) == {"a": 1}
    assert lifted_writes_after({"a": ("1:x",)}, {}, {}) == {"a": ("1:x",)}
    many = {f"k{i}": i for i in range(300)}  # (past MAX_LIFTED: trimmed, as ever)
    assert len(lifted_after(many, {}, {})) == 256


def _nested(n: int, inner: str) -> str:
    text = inner
    for i in range(n):
        text = f'{{"k":{text}}}' if i % 2 else f"[{text}]"
    return f'{{"reason":{text}}}'


@pytest.mark.parametrize("inner", ['"x"', "1", "{}", "[]", '"{[{["'])
def test_a_body_read_off_as_plainly_valid_is_one_the_walk_accepts(inner: str) -> None:
    # (every nesting around the bound: what the text vouches for, `_check` accepts; what
    # it refuses, the text never vouches for)
    for n in range(12):
        text = _nested(n, inner)
        body = json.loads(text)
        try:
            inputs._check(body, 1, "")
            walked = True
        except ApiError:
            walked = False
        if inputs._plainly_valid(text):
            assert walked, text
    assert inputs._plainly_valid('{"scope":"version","route":"bench","reason":"x"}')


@pytest.mark.parametrize("escape", ["\\ud800", "\\uDC00", "\\uD83D\\uDE80"])
def test_a_body_with_a_surrogate_escape_is_walked(escape: str) -> None:
    assert not inputs._plainly_valid(f'{{"reason":"{escape}"}}')


def test_a_document_as_json_is_the_same_with_its_empty_parts() -> None:
    doc = apply_change(StateDoc(generation=1), Change(kills={"global": KillFlag(
        "global", None, None, "a", "r", "t", 0)}))
    plain = doc.to_json()
    assert plain["overrides"] == {} and plain["drills"] == {} and plain["rolled_off"] == {}
    assert StateDoc.from_json(plain) == doc
    assert StateDoc.from_json(StateDoc().to_json()) == StateDoc()


def _reference(body: dict[str, object]) -> bytes:
    """What every verifier hashes: the json encoder's canonical bytes."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


EVERY_CHARACTER = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


def _kill_events(text: str) -> list[dict[str, object]]:
    flag = KillFlag("version", "bench", text, text, text, "2026-01-01T00:00:00.000Z", 7,
                    True, "7:ab").public()
    wide = KillFlag("global", None, None, "bob", "r", "t", 2 ** 53 - 1, False).public()
    out = []
    for target, before, after in (
            ({"scope": "version", "route": "bench", "version": text}, None, flag),
            ({"scope": "global", "route": None, "version": None}, wide, None),
            ({"scope": "version", "route": "bench", "version": "v2"}, wide, flag)):
        draft = audit.AuditDraft(text, "kill", target, text, before, after, text, text,
                                 trace_id=text)
        out.append(draft.as_event())
    return out


@pytest.mark.parametrize("text", [*TEXTS, EVERY_CHARACTER])
@pytest.mark.parametrize("key", [None, ("k1", b"k" * 32)])
def test_a_kill_event_is_written_by_pydantic_core_as_the_json_encoder_writes_it(
        text: str, key: tuple[str, bytes] | None) -> None:
    for base in _kill_events(text):
        ev, stored = audit.seal_json(base, "ab" * 32, key)
        body = {k: v for k, v in ev.items() if k not in ("hash", "mac")}
        assert auditcanon.kill_canonical(body) is not None  # (the fast path is taken)
        assert audit.canonical(ev) == _reference(body)
        assert ev["hash"] == hashlib.sha256(_reference(body)).hexdigest()
        assert stored.startswith(_reference(body)[:-1])


@pytest.mark.parametrize(("change", "fast"), [
    ({"extra": 1}, False), ({"target": {"scope": "version", "route": "b"}}, False),
    ({"before": None, "after": None}, False), ({"after": {"generation": 1.0}}, False),
    ({"after": {"extra": "x"}}, False), ({"after": [1]}, False), ({"reason": 1.5}, False),
    ({"target": {"scope": "v", "route": "b", "version": {}}}, False),
    ({"time": ["t"]}, False), ({"after": {"reason": ("r",)}}, False),
    # other plain values where a kill has strings: written alike by both, the same bytes
    ({"after": {"generation": True}}, True), ({"after": {"abort_inflight": 1}}, True),
    ({"after": {"route": 5}}, True), ({"reason": 10 ** 40}, True), ({"kid": None}, True),
    ({"target": {"scope": None, "route": None, "version": None}}, True),
])
def test_an_event_of_another_shape_is_written_by_the_json_encoder(
        change: dict[str, object], fast: bool) -> None:
    ev = {k: v for k, v in audit.seal_json(_kill_events("x")[0], "ab" * 32, ("k", b"k" * 32)
                                           )[0].items() if k not in ("hash", "mac")}
    for k, v in change.items():
        if k == "after" and isinstance(v, dict) and isinstance(ev["after"], dict):
            ev["after"] = {**ev["after"], **v}
        else:
            ev[k] = v
    assert (auditcanon.kill_canonical(ev) is not None) == fast
    assert audit.canonical(ev) == _reference(ev)


def test_a_lone_surrogate_fails_as_before() -> None:
    ev = {k: v for k, v in audit.seal_json(_kill_events("x")[0], "ab" * 32)[0].items()
          if k != "hash"}
    ev["reason"] = "\ud800"
    assert auditcanon.kill_canonical(ev) is None
    with pytest.raises(UnicodeEncodeError):
        audit.canonical(ev)


def _twins() -> tuple[type, type]:
    """One class as dataclasses makes it and its twin with fast_init's __init__."""
    def make() -> type:
        @dataclasses.dataclass(frozen=True, slots=True)
        class Value:
            a: int
            b: str = "b"
            c: dict[str, int] = dataclasses.field(default_factory=dict)
            d: int = dataclasses.field(default=4, init=False)
            e: list[int] = dataclasses.field(default_factory=list, init=False)
            f: int = dataclasses.field(default=6, kw_only=True)
            g: str = dataclasses.field(kw_only=True, default_factory=str)
        return Value
    return make(), slotted.fast_init(make())


def test_a_fast_init_takes_the_same_arguments_and_makes_the_same_value() -> None:
    plain_cls, fast_cls = _twins()
    theirs = inspect.signature(plain_cls).parameters
    ours = inspect.signature(fast_cls).parameters
    assert [(p.name, p.kind) for p in theirs.values()] == [(p.name, p.kind) for p in ours.values()]
    for name in ("b", "f"):  # (a factory's default is each one's own sentinel)
        assert theirs[name].default == ours[name].default
    for args, kw in (((1,), {}), ((1, "x", {"k": 1}), {"f": 9, "g": "y"}), ((2,), {"g": "z"})):
        made, fast = plain_cls(*args, **kw), fast_cls(*args, **kw)
        assert [getattr(made, f.name) for f in dataclasses.fields(made)] \
            == [getattr(fast, f.name) for f in dataclasses.fields(fast)]
    assert fast_cls(1).c is not fast_cls(1).c and fast_cls(1).e is not fast_cls(1).e
    with pytest.raises(TypeError):
        fast_cls(1, "b", {}, 4)  # (d is not a parameter)
    with pytest.raises(TypeError):
        fast_cls(1, "b", {}, 6)  # (nor f positionally)
    with pytest.raises(TypeError):
        fast_cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast_cls(1).a = 2


@pytest.mark.parametrize("cls", [KillFlag, HistoryEntry, Change, audit.AuditDraft,
                                 actions.Intent, actions.Plan])
def test_the_kill_paths_values_take_their_fields_as_before(cls: type) -> None:
    params = inspect.signature(cls).parameters
    assert list(params) == [f.name for f in dataclasses.fields(cls) if f.init]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            assert params[f.name].default == f.default
    assert Change().kills == {} and Change().kills is not Change().kills


def test_a_class_that_is_not_a_frozen_slots_dataclass_gets_no_fast_init() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    for cls in (NoSlots, NotFrozen, int):
        with pytest.raises(TypeError, match="not a frozen slots dataclass"):
            slotted.fast_init(cls)


def _old_plain(obj: object) -> dict[str, object]:
    out = {}
    for name in obj.__slots__:  # type: ignore[attr-defined]
        v = getattr(obj, name)
        out[name] = dict(v) if type(v) is dict else v
    return out


def test_a_value_as_a_dict_is_what_the_loop_over_its_slots_gave() -> None:
    values = [_flag(3), HistoryEntry("v1", "t", "a", "r", "u", None, 2),
              RouteOverride("v1", {"v1": 100.0}, "a", "r", "t", "rollback"),
              RolledOff("v2", "u", None, "t", "a", "rollback"),
              DrillRecord("d1", "kill", "bench", "v2", "a", "t", 1.5, {"k": {"n": 1}},
                          ({"i": 1},), {"version": "v2"}, nonce="n", made=2, kept=("x",))]
    for v in values:
        got, old = plain(v), _old_plain(v)
        assert got == old and list(got) == list(old)
        for name, value in got.items():
            if type(value) is dict:  # (copied: the frozen value's own is not handed out)
                assert value is not getattr(v, name)
    assert plain(values[0]) is not plain(values[0])


@pytest.mark.parametrize("text", [*TEXTS, "é" * 300, "\x1b[31m" + "x" * 2000, " " * 40])
def test_an_event_cleans_its_texts_as_clean_text_does(text: str) -> None:
    ev = audit.AuditDraft(text, "kill", {"route": text}, text, request_id=text, source=text,
                          trace_id=text).as_event()
    assert ev["actor"] == audit.clean_text(text, 256)
    assert ev["target"] == {"route": audit.clean_text(text, 256)}
    assert ev["reason"] == audit.clean_text(text)
    assert ev["request_id"] == ev["source"] == audit.clean_text(text, 128)
    assert ev["trace_id"] == audit.clean_text(text, 32)


def test_two_keys_whose_ids_collide_sign_each_with_its_own_secret() -> None:
    cur, prev = Key("samekid", b"c" * 32), Key("samekid", b"p" * 32)
    keys = Keyring(cur, prev, context="kgtest")
    assert keys._mac(prev, b"state", b"x") == _old_mac(keys, prev, b"state", b"x")
    assert keys.sign(b"state", b"x")[1] == _old_mac(keys, cur, b"state", b"x")


def test_the_fast_event_writer_is_checked_against_the_encoder_at_import(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pydantic-core that escaped one character otherwise would fork the hash chain:
    the import-time probe says whether the two writers agree, and a disagreement turns
    the fast path off (every event then written by the encoder)."""
    from gateway.domain import auditcanon

    flag = {"abort_inflight": True, "actor": "a", "generation": 3, "reason": "r",
            "route": "iris", "scope": "route", "time": "t", "version": None}
    ev = {"action": "kill", "actor": "a", "id": "i", "prev_hash": "p", "reason": "r",
          "request_id": None, "source": "s", "time": "t", "trace_id": None,
          "target": {"route": "iris", "scope": "route", "version": None},
          "before": None, "after": flag}
    assert auditcanon._AGREE is True  # (the installed pydantic-core writes alike)
    assert auditcanon.kill_canonical(ev) is not None  # (the fast path, taken)
    monkeypatch.setattr(auditcanon, "to_json", lambda v: b"{}")
    assert auditcanon._agrees() is False
    monkeypatch.setattr(auditcanon, "_AGREE", False)
    assert auditcanon.kill_canonical(ev) is None
