"""Open Inference Protocol (V2) answer comparison, per output tensor.

Owns `compare_tensors`, the `compare: v2_tensors` kind: outputs matched by name; each
must have the primary's shape and datatype; numbers agree when |s - p| <= atol +
rtol * |p| (numpy's `isclose`, NaN equal to NaN), so float noise of 1e-7 passes where a
real change does not; with `argmax` (or `top_k`) a classifier is judged by its decision
per row (the last axis), its scores only measured. Pure; tensor data flat or nested.

Paths: an output's values (and its decision) differ at `outputs[NAME].data`, its shape and
datatype at `.shape` and `.datatype`, and an output missing, extra or unreadable at
`outputs[NAME]`: the noise floor excuses a difference by its path, so a primary whose
scores vary from call to call must not excuse a shadow that changes the tensor's form.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from gateway.config_shadow import V2TensorsCompare
from gateway.domain.compare_json import MAX_DIFFERENCES, loads
from gateway.domain.comparison import MAX_PATH, Comparison, Difference

__all__ = ["compare_tensors", "flatten", "top_classes"]

_NUMERIC = frozenset({"FP16", "FP32", "FP64", "BF16", "INT8", "INT16", "INT32", "INT64",
                      "UINT8", "UINT16", "UINT32", "UINT64"})
_MAX_ELEMENTS = 10_000_000


class _Unreadable(ValueError):
    pass


def flatten(data: Any) -> list[Any]:
    """Row-major elements of flat or nested tensor data."""
    if not isinstance(data, list):
        raise _Unreadable("tensor data is not a list")
    if not data or type(data[0]) is not list:
        return data  # flat (nesting is uniform: a list further on fails the type checks)
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _follows(data: list[Any], shape: list[int]) -> bool:
    """Whether nested `data` nests as `shape` says (each list at depth d holds shape[d]
    items, numbers only at the last); flat data always does (its length is checked)."""
    if not data or type(data[0]) is not list:
        return True
    level: list[Any] = [data]
    for dim in shape:
        inner: list[Any] = []
        for x in level:
            if type(x) is not list or len(x) != dim:
                return False
            inner.extend(x)
        level = inner
    return list not in set(map(type, level))


def _where(name: str, part: str = "") -> str:
    """The path of an output, or of its `part` (data, shape, datatype); names come from
    the answers: cut like every path kept (the part stays, so parts stay apart)."""
    where = f"outputs[{name}]"
    if len(where) + len(part) > MAX_PATH:
        where = where[:MAX_PATH - 3 - len(part)] + "..."
    return where + part


def _outputs(doc: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise _Unreadable("not a V2 inference answer (no 'outputs' list)")
    out: dict[str, dict[str, Any]] = {}
    for i, t in enumerate(doc["outputs"]):
        if not isinstance(t, dict):
            raise _Unreadable(f"outputs[{i}] is not an object")
        name = t.get("name")
        shape = t.get("shape")
        if not isinstance(name, str) or not isinstance(shape, list) or \
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _Unreadable(f"outputs[{i}] has no name or no valid shape")
        if name in out:  # (which one would a client read? not the same for every client)
            raise _Unreadable(f"outputs[{i}] repeats the name of another output")
        out[name] = t
    return out


def _numbers(xs: list[Any]) -> list[float]:
    try:
        sum(xs)  # a loop in C: anything but numbers (and bools, ints) raises TypeError
    except TypeError:
        raise _Unreadable("a numeric tensor holds a non-number") from None
    except OverflowError:
        pass  # a huge integer is still a number
    if bool in set(map(type, xs)):  # (JSON's true is not 1; C loops too, ~17 ms per 1e6)
        raise _Unreadable("a numeric tensor holds true or false")
    return xs


def top_classes(row: list[float], k: int) -> frozenset[int] | int:
    """The index of the largest score (k == 1: the first one, like numpy's argmax), or
    the set of the k largest."""
    if k == 1:
        return max(range(len(row)), key=row.__getitem__) if row else 0
    return frozenset(sorted(range(len(row)), key=lambda i: (-row[i], i))[:k])


def _decision(row: list[float], k: int) -> Any:
    """A row's decision when its scores may hold NaN: a NaN score decides nothing (Python's
    max, like numpy's argmax, would put the top class at the first NaN, so a shadow scoring
    NaN everywhere agreed with every row whose top class is the first); the decision is
    where the NaN are and the top class (or K) among the other scores."""
    nans = frozenset(i for i, x in enumerate(row) if x != x)
    if not nans:
        return top_classes(row, k)
    ranked = sorted((i for i in range(len(row)) if i not in nans), key=lambda i: (-row[i], i))
    return nans, (ranked[0] if ranked else None) if k == 1 else frozenset(ranked[:k])


def _has_nan(xs: list[float]) -> bool:
    """Whether a number of `xs` is NaN (a C loop: the sum of any NaN, or of both infinities,
    is NaN; the latter costs only the slower decision)."""
    try:
        total = sum(xs)
    except OverflowError:  # an integer beyond a float's range among floats
        return any(x != x for x in xs)
    return total != total


def _close(p: list[float], s: list[float], atol: float, rtol: float) -> tuple[int, float]:
    """(elements not close, the largest absolute difference among finite ones)."""
    if p == s:
        return 0, 0.0
    try:
        # the common case in C loops: every difference finite and within atol
        diffs = list(map(abs, map(operator.sub, s, p)))
        if math.isfinite(sum(diffs)):
            worst = max(diffs)
            if worst <= atol:
                return 0, worst
    except OverflowError:
        pass
    bad = 0
    worst = 0.0
    for a, b in zip(p, s, strict=True):
        if a == b or (a != a and b != b):  # the same infinity; NaN and NaN
            continue
        try:
            d = abs(b - a)
            # (an infinite primary makes the tolerance infinite too: inf <= inf must not
            # make another number, or the other infinity, close; numpy's isclose agrees)
            finite = math.isfinite(d)
            close = finite and d <= atol + rtol * abs(a)
        except OverflowError:  # an integer beyond a float's range
            bad += 1
            continue
        if not close:
            bad += 1
        if finite and d > worst:
            worst = d
    return bad, worst


def _tensor(cfg: V2TensorsCompare, name: str, p: dict[str, Any], s: dict[str, Any],
            diffs: list[Difference], detail: dict[str, Any]) -> None:
    where = _where(name)
    n = math.prod(p["shape"])
    if n > _MAX_ELEMENTS:
        raise _Unreadable(f"{where} has more than {_MAX_ELEMENTS} elements")
    pd = flatten(p.get("data"))
    if len(pd) != n:
        raise _Unreadable(f"{where}: {len(pd)} elements for shape {p['shape']}")
    dtype = p.get("datatype")
    numeric = isinstance(dtype, str) and dtype in _NUMERIC
    pn = _numbers(pd) if numeric else pd
    if s.get("shape") != p["shape"]:
        diffs.append(Difference("shape", _where(name, ".shape")))
        return
    if s.get("datatype") != p.get("datatype"):
        diffs.append(Difference("datatype", _where(name, ".datatype")))
        return
    try:
        sd = flatten(s.get("data"))
    except _Unreadable:
        diffs.append(Difference("unparsable", where))
        return
    if len(sd) != n or not _follows(s["data"], p["shape"]):  # (a client reads it nested)
        diffs.append(Difference("shape", _where(name, ".shape")))
        return
    where = _where(name, ".data")  # (values and decisions: what a noisy primary varies)
    if not numeric:
        # BYTES, BOOL: exact (and true is not 1, as in the json comparison)
        if pd != sd or any(type(a) is not type(b) for a, b in zip(pd, sd, strict=True)):
            diffs.append(Difference("values", where))
        return
    try:
        sn = _numbers(sd)
    except _Unreadable:
        diffs.append(Difference("unparsable", _where(name)))
        return
    bad, worst = _close(pn, sn, cfg.atol, cfg.rtol)
    detail["max_abs_diff"] = max(detail.get("max_abs_diff", 0.0), worst)
    detail["values_close"] = detail.get("values_close", True) and bad == 0
    k = cfg.top_k or (1 if cfg.argmax else 0)
    if not k:
        if bad:
            diffs.append(Difference("values", where))
        return
    width = p["shape"][-1] if p["shape"] else n
    rows = n // width if width else 0
    # (every value close: NaN where the primary has NaN only; rows with NaN are still
    # decided without them, or two rows whose first score is NaN agreed whatever the others
    # said: Python's max keeps a NaN it starts from)
    decide = _decision if bad or _has_nan(pn) else top_classes
    differ = sum(1 for r in range(rows)
                 if decide(pn[r * width:(r + 1) * width], k)
                 != decide(sn[r * width:(r + 1) * width], k))
    seen, same = detail.get("rows", 0) + rows, detail.get("rows_agreed", 0) + rows - differ
    detail["rows"], detail["rows_agreed"] = seen, same
    if differ:
        diffs.append(Difference("argmax" if k == 1 else "top_k", where))


def compare_tensors(cfg: V2TensorsCompare, primary: bytes, shadow: bytes) -> Comparison:
    try:
        p_out = _outputs(loads(primary))
    except ValueError as exc:
        return Comparison(False, (), {"why": f"the primary's answer: {exc}"})
    try:
        s_out = _outputs(loads(shadow))
    except ValueError:
        return Comparison(True, (Difference("unparsable", "$"),))
    names = list(cfg.outputs) if cfg.outputs is not None else list(p_out)
    diffs: list[Difference] = []
    detail: dict[str, Any] = {}
    compared = False
    try:
        for name in names:
            p = p_out.get(name)
            s = s_out.get(name)
            if p is None:
                if s is not None:
                    diffs.append(Difference("extra_output", _where(name)))
                continue
            compared = True
            if s is None:
                diffs.append(Difference("missing_output", _where(name)))
                continue
            _tensor(cfg, name, p, s, diffs, detail)
    except _Unreadable as exc:
        return Comparison(False, (), {"why": f"the primary's answer: {exc}"})
    if cfg.outputs is None:
        extra = [n for n in s_out if n not in p_out]
        diffs.extend(Difference("extra_output", _where(n)) for n in extra[:MAX_DIFFERENCES])
    elif not compared and not diffs:  # (an agreement on nothing is not one)
        return Comparison(False, (), {"why": "the primary's answer has none of the outputs "
                                             "compared (shadow.compare.v2_tensors.outputs)"})
    return Comparison(True, tuple(diffs), detail)
