"""Generic JSON answer comparison: a structural diff with ignorable paths.

Owns `diff_json` (every path where two JSON documents differ: a missing or extra key, a
list of another length, another value or type; numbers compare by value, so 1 == 1.0,
but true is not 1) and `compare_json`, the `compare: json` kind. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.config_shadow import ANSWER_TEXT_MIN, JsonCompare
from gateway.domain.comparison import (
    Comparison,
    Difference,
    Pattern,
    Step,
    compile_paths,
    matches,
    render,
)

__all__ = ["MAX_DIFFERENCES", "compare_json", "diff_json", "loads"]

#: differences listed per comparison (the rest are counted in detail["more"])
MAX_DIFFERENCES = 64
_MISSING = object()


def loads(body: bytes) -> Any:
    """The parsed document; ValueError when `body` is not JSON (or too deeply nested)."""
    try:
        return json.loads(body)
    except (RecursionError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _text(v: Any) -> bool:
    """A model's text, when no `answer_paths` say where the answer is (ANSWER_TEXT_MIN)."""
    return isinstance(v, str) and len(v) > ANSWER_TEXT_MIN and any(c.isspace() for c in v)


def diff_json(a: Any, b: Any, ignore: Sequence[Pattern] = (),
              limit: int = MAX_DIFFERENCES,
              answer: Sequence[Pattern] | None = ()) -> tuple[list[Difference], int]:
    """Where `b` differs from `a`: up to `limit` differences, and how many there were.
    A difference in the answer is of kind `answer` (compare.ANSWER_KINDS): at a path
    `answer` covers; `answer` None: a value or type difference where either side is a
    model's text (`_text`)."""
    out: list[Difference] = []
    total = 0

    def add(kind: str, at: tuple[Step, ...], x: Any = None, y: Any = None) -> None:
        nonlocal total
        total += 1
        if len(out) < limit:
            if answer is None:
                if kind in ("value", "type") and (_text(x) or _text(y)):
                    kind = "answer"
            elif answer and matches(answer, at):
                kind = "answer"
            out.append(Difference(kind, render(at)))

    def walk(x: Any, y: Any, at: tuple[Step, ...]) -> None:
        if ignore and at and matches(ignore, at):
            return
        kx, ky = _kind(x), _kind(y)
        if kx != ky:
            add("type", at, x, y)
        elif kx == "object":
            for k, v in x.items():
                w = y.get(k, _MISSING)
                if w is _MISSING:
                    if not (ignore and matches(ignore, (*at, k))):
                        add("missing", (*at, k))
                else:
                    walk(v, w, (*at, k))
            for k in y:
                if k not in x and not (ignore and matches(ignore, (*at, k))):
                    add("extra", (*at, k))
        elif kx == "array":
            if len(x) != len(y):
                add("length", at)
            for i, (v, w) in enumerate(zip(x, y, strict=False)):
                walk(v, w, (*at, i))
        elif x != y and not (x != x and y != y):  # (NaN equals NaN, as for tensors)
            add("value", at, x, y)

    walk(a, b, ())
    return out, total


def compare_json(cfg: JsonCompare, primary: bytes, shadow: bytes) -> Comparison:
    try:
        a = loads(primary)
    except ValueError:
        # not JSON: an answer of another kind is compared byte for byte
        return Comparison(True, (Difference("body", "$"),) if primary != shadow else ())
    try:
        b = loads(shadow)
    except ValueError:
        return Comparison(True, (Difference("unparsable", "$"),))
    try:
        diffs, total = diff_json(a, b, compile_paths(tuple(cfg.ignore)), MAX_DIFFERENCES,
                                 None if cfg.answer_paths is None
                                 else compile_paths(tuple(cfg.answer_paths)))
    except RecursionError:
        return Comparison(False, (), {"why": "the answer is nested too deeply to compare"})
    detail: dict[str, Any] = {"differences": total}
    if total > len(diffs):
        detail["more"] = total - len(diffs)
    return Comparison(True, tuple(diffs), detail)
