"""Frozen slots dataclasses made and copied in fewer instructions: `fast_init`, `copier`.

Owns the two functions written out per class that set each slot of a frozen slots
dataclass straight, through the slot's own setter (its member descriptor's `__set__`):
the dataclass's own __init__ sets each through object.__setattr__, which looks the name
up on the type first, and `dataclasses.replace` reads the fields' metadata and calls
__init__ with keywords. What they make is the same value (the same fields, defaults and
default factories, a fresh value from each factory; still frozen); a class with a
__post_init__ (something validates or derives its fields) is refused, and so is a field
named with the written functions' own prefix (`kg_`); an init=False field is copied as
`dataclasses.replace` makes it (its default, or its factory's new value), and a base
class's slots are set through that base's own descriptors. Pure; imports only
the standard library. Why: a kill's committer makes and copies a dozen of them before its
commit leaves (a kill flag's __init__ 14k → 8k instructions, callgrind; a Change's 25k;
a document's copy 37k → 20k).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["copied", "copier", "fast_init", "plainer"]

_T = TypeVar("_T")
_C = TypeVar("_C", bound=type)
_MISSING = object()
#: the prefix of every name the written functions use beside the fields' own (their
#: locals and the globals they are run in): a field so named is refused. A field named as
#: one of those without it (`_missing`, `_set0`) shadowed it: a copy given `_missing=None`
#: kept the old value and set every other field to the sentinel, silently.
_OWN = "kg_"


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: made through its own __init__")
    found = list(dataclasses.fields(cls))
    if any(f.name.startswith(_OWN) for f in found):
        raise TypeError(f"{cls.__name__} names a field {_OWN}...: the written functions' "
                        "own names")
    return found


def _setter(cls: type, name: str) -> Any:
    """The slot `name`'s own setter: its member descriptor's `__set__`, in `cls` or the
    class of `cls`'s bases that made it (a subclass does not repeat its bases' slots)."""
    for klass in cls.__mro__:
        slot = klass.__dict__.get(name)
        if slot is not None and hasattr(slot, "__set__"):
            return slot.__set__
    raise TypeError(f"{cls.__name__}.{name} is not a slot")


def fast_init(cls: _C) -> _C:
    """Replace the frozen slots dataclass `cls`'s __init__ with one that sets its slots
    straight: the same parameters (positional or keyword-only, defaults, default
    factories called for each instance), the same fields set. Put above @dataclass."""
    space: dict[str, Any] = {"kg_missing": _MISSING}
    params: list[str] = ["kg_self_"]
    kw_only: list[str] = []
    body: list[str] = []
    for i, f in enumerate(_fields(cls)):
        space[f"kg_set{i}"] = _setter(cls, f.name)
        if f.default is not dataclasses.MISSING:
            space[f"kg_d{i}"] = f.default
            value, param = f"kg_d{i}", f"{f.name}=kg_d{i}"
        elif f.default_factory is not dataclasses.MISSING:
            space[f"kg_f{i}"] = f.default_factory
            value = f"kg_f{i}() if {f.name} is kg_missing else {f.name}"
            param = f"{f.name}=kg_missing"
        else:
            value, param = f.name, f.name
        if not f.init:  # (never a parameter: its default, or its factory's value)
            reset = _reset(f, i)
            if reset is None:
                continue  # (left unset, as the dataclass's own __init__ leaves it)
            value = reset
        else:
            (kw_only if f.kw_only else params).append(param)
            if f.default_factory is dataclasses.MISSING:
                value = f.name
        body.append(f"    kg_set{i}(kg_self_, {value})")
    if kw_only:
        params += ["*", *kw_only]
    text = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "    pass")
    exec(text, space)  # (our own text: field names are identifiers)
    init = space["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__dict__["__init__"].__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - (mypy: __init__ on a type is unsound)
    return cls


def _reset(f: dataclasses.Field[Any], i: int) -> str | None:
    """What an init=False field is set to by __init__ (the written functions' `kg_d{i}` or
    `kg_f{i}`): its default, or its factory's new value; None: it is left unset."""
    if f.default is not dataclasses.MISSING:
        return f"kg_d{i}"
    if f.default_factory is not dataclasses.MISSING:
        return f"kg_f{i}()"
    return None


def copier(cls: type[_T]) -> Callable[..., _T]:
    """`dataclasses.replace` for the frozen slots dataclass `cls`, as a function of its own:
    `copy(obj, **changes)` sets each slot of a new instance straight, the change given or
    the old value (no __init__: nothing to validate or derive, `_fields` refuses a class
    with a __post_init__). An unknown field is a TypeError, as replace's; an init=False
    field is what __init__ makes of it, as replace's (its default, a new value of its
    factory, or unset: never the old object), and naming it a ValueError, as replace's."""
    found = _fields(cls)
    names = [f.name for f in found]
    space: dict[str, Any] = {"kg_new": object.__new__, "kg_cls": cls,
                             "kg_missing": _MISSING}
    lines = [f"def copy(kg_obj_, *, {', '.join(f'{n}=kg_missing' for n in names)}):",
             "    kg_new_ = kg_new(kg_cls)"]
    for i, f in enumerate(found):
        name = f.name
        space[f"kg_set{i}"] = _setter(cls, name)
        if f.init:
            lines.append(f"    kg_set{i}(kg_new_, kg_obj_.{name} if {name} is kg_missing "
                         f"else {name})")
            continue
        space[f"kg_d{i}"], space[f"kg_f{i}"] = f.default, f.default_factory
        lines.append(f"    if {name} is not kg_missing: raise ValueError('field {name} is "
                     "declared with init=False, it cannot be specified with replace()')")
        if (value := _reset(f, i)) is not None:
            lines.append(f"    kg_set{i}(kg_new_, {value})")
    lines.append("    return kg_new_")
    exec("\n".join(lines), space)  # (our own text: field names are identifiers)
    fn: Callable[..., _T] = space["copy"]
    fn.__qualname__ = f"copier({cls.__name__})"
    return fn


#: class -> its copier (`copied`'s, made at its first copy)
_COPIERS: dict[type, Callable[..., Any]] = {}


def copied(obj: _T, **changes: Any) -> _T:
    """`dataclasses.replace(obj, **changes)` for a frozen slots dataclass with no
    __post_init__, by its `copier` (apply_change stamps every new kill flag so)."""
    cls = type(obj)
    copy = _COPIERS.get(cls)
    if copy is None:
        copy = _COPIERS[cls] = copier(cls)
    return copy(obj, **changes)


#: words of an annotation under which a value may be a dict (copied by `plainer`)
_MAY_HOLD_DICT = ("dict", "Any", "Mapping", "Progress", "object")


def plainer(cls: type) -> Callable[[Any], dict[str, Any]]:
    """A function giving an instance of the slots class `cls` as a dict of its slots (in
    `__slots__`' order), a dict value copied: `stateparts.plain`'s value, written out as one
    dict display of its slots (a loop over the names took ~1k instructions a field: a kill
    flag's ~10k, and the committer's document and event need three or four). Only a slot
    whose annotation may hold a dict (or that has none) is looked at for one: a kill
    flag's strings, ints and bools are taken as they are (its type says so, and a document
    read back is validated to it); looking at each value's type cost as much as the rest."""
    names = list(getattr(cls, "__slots__"))  # noqa: B009 - (mypy: a type has no __slots__)
    if any(n.startswith(_OWN) for n in names):
        raise TypeError(f"{cls.__name__} names a slot {_OWN}...: the written function's "
                        "own names")
    notes: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        notes.update(getattr(klass, "__annotations__", {}))
    parts = []
    for n in names:
        note = notes.get(n)
        if isinstance(note, str) and not any(w in note for w in _MAY_HOLD_DICT):
            parts.append(f"{n!r}: kg_obj_.{n}")
        else:
            parts.append(f"{n!r}: dict(kg_v_) if type(kg_v_ := kg_obj_.{n}) is dict else kg_v_")
    space: dict[str, Any] = {}
    exec(f"def plain(kg_obj_):\n    return {{{', '.join(parts)}}}",
         space)  # (our own text: slot names are identifiers)
    fn: Callable[[Any], dict[str, Any]] = space["plain"]
    fn.__qualname__ = f"plainer({cls.__name__})"
    return fn
