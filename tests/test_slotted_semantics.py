"""slotted.fast_init and slotted.copier against the dataclass's own __init__ and
`dataclasses.replace`, over class shapes the kill path's classes do not have yet but any
frozen slots dataclass may: fields named like the written functions' own names
(`_missing`, `_set0`, `_d1`, `_new`), init=False fields, kw_only fields, inheritance.
Each written function must make what the dataclass makes, or refuse the class."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.domain import slotted

pytestmark = pytest.mark.timeout(60)

#: names the written functions once used as their globals, and plain ones
NAMES = ("_missing", "_set0", "_set1", "_d0", "_d1", "_f0", "_f1", "_new", "_cls", "a", "b",
         "c")
#: values a field is given: equal and identical ones (`is` is what the sentinel test uses)
VALUES = st.sampled_from((None, 0, 1, "x", ()))


def _make(specs: list[tuple[str, str, bool, bool]], base: type | None = None) -> type:
    """A frozen slots dataclass of `specs` (name, "none"/"default"/"factory", init,
    kw_only); TypeError when the dataclass module refuses the shape."""
    fields: list[Any] = []
    for name, kind, init, kw_only in specs:
        if kind == "default":
            f = dataclasses.field(default=7, init=init, kw_only=kw_only)
        elif kind == "factory":
            f = dataclasses.field(default_factory=list, init=init, kw_only=kw_only)
        else:
            f = dataclasses.field(init=init, kw_only=kw_only)
        fields.append((name, Any, f))
    return dataclasses.make_dataclass("Shape", fields, frozen=True, slots=True,
                                      bases=(base,) if base is not None else ())


def _state(obj: object) -> list[tuple[str, Any]]:
    """Each field's value, or a mark for a slot left unset."""
    out = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        out.append((f.name, getattr(obj, f.name, "<unset>")))
    return out


def _outcome(fn: Any, *args: Any, **kw: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kw)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, None


spec = st.tuples(st.sampled_from(("none", "default", "factory")), st.booleans(), st.booleans())


@given(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True),
       st.data())
@settings(max_examples=300, deadline=None)
def test_fast_init_and_copier_make_what_the_dataclass_makes(names: list[str],
                                                            data: st.DataObject) -> None:
    specs = [(n, *data.draw(spec)) for n in names]
    try:
        plain_cls = _make(specs)
    except TypeError:
        assume(False)
        return
    fast_cls = slotted.fast_init(_make(specs))
    copy = slotted.copier(plain_cls)
    init_fields = [f for f in dataclasses.fields(plain_cls) if f.init]
    given_ = {f.name: data.draw(VALUES) for f in init_fields
              if (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
              or data.draw(st.booleans())}
    made, fast = plain_cls(**given_), fast_cls(**given_)
    assert _state(made) == _state(fast)
    for f in dataclasses.fields(plain_cls):
        if f.default_factory is not dataclasses.MISSING and f.name not in given_:
            assert getattr(fast, f.name) is not getattr(fast_cls(**given_), f.name)
    # a copy: some fields changed (an init=False one too: replace refuses it)
    changes = {f.name: data.draw(VALUES) for f in dataclasses.fields(plain_cls)
               if data.draw(st.booleans())}
    theirs, ours = _outcome(dataclasses.replace, made, **changes), _outcome(copy, made, **changes)
    assert theirs[0] == ours[0], (changes, theirs, ours)
    if theirs[0] == "ok":
        assert _state(theirs[1]) == _state(ours[1]), changes
        for f in dataclasses.fields(plain_cls):
            if not f.init and f.default_factory is not dataclasses.MISSING:
                # (replace makes it again: never the old instance's mutable value)
                assert getattr(ours[1], f.name) is not getattr(made, f.name)


def test_a_field_named_missing_is_copied_as_replace_copies_it() -> None:
    """The case the property found first: a field `_missing` shadowed the copier's
    sentinel, so a copy given `_missing=None` kept the old value and set every other field
    to the sentinel object; fast_init ignored a value given to a factory's field."""
    cls = _make([("_missing", "default", True, False), ("tags", "factory", True, False)])
    obj = cls("x", [1])
    assert _state(slotted.copier(cls)(obj, _missing=None)) == [("_missing", None),
                                                                ("tags", [1])]
    fast = slotted.fast_init(_make([("_missing", "default", True, False),
                                    ("tags", "factory", True, False)]))
    assert _state(fast(None, None)) == [("_missing", None), ("tags", None)]


def test_an_init_false_field_is_not_shared_by_a_copy() -> None:
    cls = _make([("a", "none", True, False), ("seen", "factory", False, False)])
    obj = cls(1)
    obj.seen.append("x")  # type: ignore[attr-defined]
    copy = slotted.copier(cls)(obj, a=2)
    assert copy.seen == [] and copy.seen is not obj.seen  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="init=False"):
        slotted.copier(cls)(obj, seen=[5])


def test_a_subclass_gets_a_fast_init_and_a_copier() -> None:
    base = _make([("a", "default", True, False)])
    sub = _make([("b", "factory", True, False)], base=base)
    twin = slotted.fast_init(_make([("b", "factory", True, False)], base=base))
    assert _state(twin(3, [4])) == _state(sub(3, [4])) and _state(twin()) == _state(sub())
    assert _state(slotted.copier(sub)(sub(3, [4]), a=5)) == [("a", 5), ("b", [4])]


def test_a_field_with_the_written_functions_prefix_is_refused() -> None:
    cls = _make([("kg_x", "none", True, False)])
    with pytest.raises(TypeError, match="kg_"):
        slotted.copier(cls)
    with pytest.raises(TypeError, match="kg_"):
        slotted.fast_init(cls)
