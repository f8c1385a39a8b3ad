"""Schema errors in our words: pydantic's `ValidationError` -> `Problem(yaml_path, message)`.

Owns the YAML path of an error (`routes[0].versions[1].url`), the wording of each error
type, and the "did you mean" hint for an unknown key (the field names of the model that
holds it). Imports pydantic and the schema (`gateway.config`); no I/O.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config import Config
from gateway.errors import Problem

__all__ = ["format_path", "problems_from"]


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the model that holds `loc[-1]`, for 'did you mean' hints."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        for cand in _unwrap(ann):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
        else:
            return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _unwrap(ann: Any) -> Iterator[Any]:
    args = getattr(ann, "__args__", None)
    if not args:
        yield ann
        return
    for a in args:
        yield from _unwrap(a)


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# pydantic error type -> our wording ({names} are the error's context values)
_TEMPLATES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "too_short": "must have at least {min_length} item(s)",
    "literal_error": "must be one of {expected}",
    "string_pattern_mismatch": "must match {pattern}",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
}


def _message(err: Any) -> str:
    typ = err["type"]
    ctx = err.get("ctx", {})
    if typ == "missing":
        return "required"
    if typ == "extra_forbidden":
        name = err["loc"][-1]
        hint = difflib.get_close_matches(str(name), _known_fields(err["loc"]), n=1)
        return "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    if typ == "string_type":  # (`name: on`, `stable: 1.10`: YAML read it as another type)
        inp = err.get("input")
        read_as = ("true or false (an unquoted yes, no, on, off, true or false)"
                   if isinstance(inp, bool) else f"the number {inp!r}"
                   if isinstance(inp, (int, float)) else f"the date {inp}"
                   if isinstance(inp, (datetime.date, datetime.datetime)) else None)
        if read_as is not None:
            return f"must be a string: YAML reads this value as {read_as}; put it in quotes"
    if typ in ("model_type", "dict_type", "list_type") and err.get("input") is None:
        # (`server:` with every key under it commented out reads as null)
        kind = "items" if typ == "list_type" else "keys"
        return (f"is empty (nothing under it but comments?): give it its {kind}, or remove "
                "the line")
    if typ == "value_error":
        return str(ctx.get("error", err["msg"]))
    template = _TEMPLATES.get(typ)
    if template is not None:
        return template.format(**{k: _num(v) for k, v in ctx.items()})
    return str(err["msg"]).replace("Input should be", "must be")


def problems_from(exc: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        out.append(Problem(format_path(loc), _message(err)))
    return out
