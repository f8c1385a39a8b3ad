"""Frozen slots dataclasses made and copied in fewer instructions: `fast_init`, `copier`.

Owns the two functions written out per class that set each slot of a frozen slots
dataclass straight, through the slot's own setter (its member descriptor's `__set__`):
the dataclass's own __init__ sets each through object.__setattr__, which looks the name
up on the type first, and `dataclasses.replace` reads the fields' metadata and calls
__init__ with keywords. What they make is the same value (the same fields, defaults and
default factories, a fresh value from each factory; still frozen); a class with a
__post_init__ (something validates or derives its fields) is refused. Pure; imports only
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
_OWN = frozenset({"kg_self_", "kg_new_", "kg_obj_", "kg_v_"})


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: made through its own __init__")
    found = list(dataclasses.fields(cls))
    if _OWN & {f.name for f in found}:
        raise TypeError(f"{cls.__name__} names a field as the written functions' locals")
    return found


def fast_init(cls: _C) -> _C:
    """Replace the frozen slots dataclass `cls`'s __init__ with one that sets its slots
    straight: the same parameters (positional or keyword-only, defaults, default
    factories called for each instance), the same fields set. Put above @dataclass."""
    space: dict[str, Any] = {"_missing": _MISSING}
    params: list[str] = ["kg_self_"]
    kw_only: list[str] = []
    body: list[str] = []
    for i, f in enumerate(_fields(cls)):
        space[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            space[f"_d{i}"] = f.default
            value, param = f"_d{i}", f"{f.name}=_d{i}"
        elif f.default_factory is not dataclasses.MISSING:
            space[f"_f{i}"] = f.default_factory
            value = f"_f{i}() if {f.name} is _missing else {f.name}"
            param = f"{f.name}=_missing"
        else:
            value, param = f.name, f.name
        if not f.init:  # (never a parameter: its default, or its factory's value)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                continue  # (left unset, as the dataclass's own __init__ leaves it)
            value = f"_d{i}" if f.default is not dataclasses.MISSING else f"_f{i}()"
        else:
            (kw_only if f.kw_only else params).append(param)
            if f.default_factory is dataclasses.MISSING:
                value = f.name
        body.append(f"    _set{i}(kg_self_, {value})")
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


def copier(cls: type[_T]) -> Callable[..., _T]:
    """`dataclasses.replace` for the frozen slots dataclass `cls`, as a function of its own:
    `copy(obj, **changes)` sets each slot of a new instance straight, the change given or
    the old value (no __init__: nothing to validate or derive, `_fields` refuses a class
    with a __post_init__). An unknown field is a TypeError, as replace's."""
    names = [f.name for f in _fields(cls)]
    space: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_missing": _MISSING}
    lines = [f"def copy(kg_obj_, *, {', '.join(f'{n}=_missing' for n in names)}):",
             "    kg_new_ = _new(_cls)"]
    for i, name in enumerate(names):
        space[f"_set{i}"] = cls.__dict__[name].__set__
        lines.append(f"    _set{i}(kg_new_, kg_obj_.{name} if {name} is _missing else {name})")
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
    if _OWN & set(names):
        raise TypeError(f"{cls.__name__} names a field as the written functions' locals")
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
