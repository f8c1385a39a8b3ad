"""Shadow answer comparison (domain/compare*.py, domain/comparison.py): pure, no loop."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from gateway.config_jsonpaths import parse_path
from gateway.config_shadow import CompareConfig
from gateway.domain.compare import AGREED, DISAGREED, NOISE, UNCOMPARABLE, compare, judge
from gateway.domain.compare_chat import normalize, read_choices
from gateway.domain.compare_json import diff_json
from gateway.domain.compare_tensors import flatten, top_classes
from gateway.domain.comparison import Answer, Difference, compile_paths, matches, redact, render


def cfg(spec: Any) -> CompareConfig:
    from gateway.config_shadow import _one_kind

    return CompareConfig.model_validate(_one_kind(spec))


def ok(doc: Any, status: int = 200, ctype: str = "application/json") -> Answer:
    return Answer(status, json.dumps(doc).encode(), ctype)


def v2(data: list[Any], shape: list[int] | None = None, dtype: str = "FP32",
       name: str = "probs", rid: str = "a") -> Answer:
    return ok({"model_name": "iris", "id": rid, "outputs": [
        {"name": name, "shape": shape or [len(data)], "datatype": dtype, "data": data}]})


def kinds(c: Any) -> list[str]:
    return [d.kind for d in c.differences]


# ---------------------------------------------------------------- common


def test_status_differs_is_a_difference_and_same_error_agrees() -> None:
    c = compare(cfg("json"), b"", ok({"a": 1}), ok({"a": 1}, 500))
    assert kinds(c) == ["status"] and c.detail == {"primary_status": 200, "shadow_status": 500}
    same_err = compare(cfg("json"), b"", ok({"e": "x"}, 503), ok({"e": "y"}, 503))
    assert same_err.agreed


def test_identical_bodies_agree_without_parsing() -> None:
    c = compare(cfg("v2_tensors"), b"", Answer(200, b"not json"), Answer(200, b"not json"))
    assert c.agreed and c.detail == {"identical": True}


# ---------------------------------------------------------------- V2 tensors


def test_tensor_noise_of_1e7_agrees_and_a_real_change_does_not() -> None:
    base = [0.1, 0.2, 0.7]
    noisy = [x + 1e-7 for x in base]
    changed = [0.1, 0.25, 0.65]
    c = compare(cfg("v2_tensors"), b"", v2(base), v2(noisy, rid="b"))
    assert c.agreed and 0 < c.detail["max_abs_diff"] < 2e-7
    c = compare(cfg("v2_tensors"), b"", v2(base), v2(changed))
    assert kinds(c) == ["values"] and c.differences[0].path == "outputs[probs].data"
    # a tolerance loose enough for the change lets it pass
    assert compare(cfg({"v2_tensors": {"atol": 0.1}}), b"", v2(base), v2(changed)).agreed


def test_tensor_relative_tolerance_scales_with_the_value() -> None:
    c = cfg({"v2_tensors": {"atol": 0, "rtol": 1e-3}})
    assert compare(c, b"", v2([1000.0]), v2([1000.5])).agreed
    assert not compare(c, b"", v2([1.0]), v2([1.5])).agreed


def test_tensor_shape_datatype_and_output_sets() -> None:
    c = cfg("v2_tensors")
    assert kinds(compare(c, b"", v2([1, 2, 3, 4], [2, 2]), v2([1, 2, 3, 4], [4]))) == ["shape"]
    assert kinds(compare(c, b"", v2([1.0]), v2([1.0], dtype="FP64"))) == ["datatype"]
    assert kinds(compare(c, b"", v2([1.0]), v2([1.0], name="other"))) == [
        "missing_output", "extra_output"]
    only = cfg({"v2_tensors": {"outputs": ["probs"]}})
    two = ok({"outputs": [{"name": "probs", "shape": [1], "datatype": "FP32", "data": [1]},
                          {"name": "debug", "shape": [1], "datatype": "FP32", "data": [5]}]})
    assert compare(only, b"", two, v2([1.0])).agreed  # debug is not compared


def test_tensor_an_infinite_primary_agrees_only_with_the_same_infinity() -> None:
    """numpy's isclose: an infinity is close only to the same infinity. |s - p| is inf,
    and so is atol + rtol * |p| when p is infinite: inf <= inf must not make them close."""
    c = cfg("v2_tensors")
    assert compare(c, b"", v2([0.5, math.inf]), v2([0.5, math.inf], rid="z")).agreed
    for other in (-math.inf, 3.0, math.nan):
        got = compare(c, b"", v2([0.5, math.inf]), v2([0.5, other]))
        assert kinds(got) == ["values"] and got.detail["values_close"] is False, other
        assert math.isfinite(got.detail["max_abs_diff"]), got.detail
    got = compare(cfg({"v2_tensors": {"argmax": True}}), b"", v2([0.5, -math.inf]),
                  v2([0.5, math.inf]))
    assert got.detail["values_close"] is False


def test_tensor_a_huge_integer_is_a_difference_not_an_error() -> None:
    c = cfg("v2_tensors")
    huge = 10 ** 400  # valid JSON, beyond a float: |s - p| cannot be computed as one
    assert kinds(compare(c, b"", v2([0.5, huge], dtype="INT64"),
                         v2([0.5, 3], dtype="INT64"))) == ["values"]
    assert kinds(compare(c, b"", v2([0.5, 3.0]), v2([0.5, huge]))) == ["values"]
    assert compare(c, b"", v2([huge], dtype="INT64"), v2([huge], dtype="INT64", rid="z")).agreed


def test_json_nan_equals_nan_as_for_tensors() -> None:
    c = cfg({"json": {"ignore": ["id"]}})
    p = Answer(200, b'{"id": 1, "loss": NaN, "x": [Infinity]}')
    assert compare(c, b"", p, Answer(200, b'{"id": 2, "loss": NaN, "x": [Infinity]}')).agreed
    assert kinds(compare(c, b"", p, Answer(200, b'{"id": 2, "loss": 1.0, "x": [Infinity]}'))) \
        == ["value"]
    assert kinds(compare(c, b"", p, Answer(200, b'{"id": 2, "loss": NaN, "x": [-Infinity]}'))) \
        == ["value"]


def test_tensor_bool_true_is_not_1() -> None:
    c = cfg("v2_tensors")
    assert kinds(compare(c, b"", v2([True, False], dtype="BOOL"),
                         v2([1, 0], dtype="BOOL"))) == ["values"]
    assert compare(c, b"", v2([True, False], dtype="BOOL"),
                   v2([True, False], dtype="BOOL", rid="z")).agreed


def test_tensor_paths_are_cut_and_extra_outputs_bounded() -> None:
    """Output names come from the answers; paths are kept in records and counts (and
    published), so they are cut like every other path, and extra outputs listed boundedly."""
    c = cfg("v2_tensors")
    long = "n" * 100_000
    got = compare(c, b"", v2([1.0], name=long), v2([2.0], name=long))
    assert kinds(got) == ["values"] and len(got.differences[0].path) <= 256
    many = ok({"outputs": [{"name": "probs", "shape": [1], "datatype": "FP32", "data": [1]}]
               + [{"name": f"x{i}" * 50, "shape": [1], "datatype": "FP32", "data": [1]}
                  for i in range(5000)]})
    got = compare(c, b"", v2([1.0]), many)
    assert 0 < len(got.differences) <= 64 and set(kinds(got)) == {"extra_output"}
    assert all(len(d.path) <= 256 for d in got.differences)


def test_tensor_nested_data_nan_inf_and_bytes() -> None:
    c = cfg("v2_tensors")
    assert compare(c, b"", v2([[0.5, 0.5], [1.0, 0.0]], [2, 2]),
                   v2([0.5, 0.5, 1.0, 0.0], [2, 2])).agreed
    nan = Answer(200, b'{"outputs":[{"name":"x","shape":[2],"datatype":"FP32",'
                      b'"data":[NaN, Infinity]}]}')
    nan2 = Answer(200, b'{"outputs":[{"name":"x","shape":[2],"datatype":"FP32",'
                       b'"data":[NaN,  Infinity]}]}')
    assert compare(c, b"", nan, nan2).agreed
    assert not compare(c, b"", nan, v2([0.0, math.inf], name="x")).agreed
    assert compare(c, b"", v2(["a", "b"], dtype="BYTES"), v2(["a", "b"], dtype="BYTES",
                                                             rid="z")).agreed
    assert kinds(compare(c, b"", v2(["a"], dtype="BYTES"), v2(["b"], dtype="BYTES"))) == [
        "values"]


def test_argmax_judges_the_decision_not_the_scores() -> None:
    c = cfg({"v2_tensors": {"argmax": True}})
    p = v2([0.1, 0.2, 0.7, 0.6, 0.3, 0.1], [2, 3])
    moved = v2([0.2, 0.2, 0.6, 0.5, 0.4, 0.1], [2, 3])  # scores moved, same top class
    res = compare(c, b"", p, moved)
    assert res.agreed and res.detail["values_close"] is False
    assert res.detail["rows"] == 2 and res.detail["rows_agreed"] == 2
    flipped = v2([0.1, 0.2, 0.7, 0.3, 0.6, 0.1], [2, 3])  # second row's class changed
    res = compare(c, b"", p, flipped)
    assert kinds(res) == ["argmax"] and res.detail["rows_agreed"] == 1


def test_top_k_set_agreement() -> None:
    c = cfg({"v2_tensors": {"top_k": 2}})
    assert compare(c, b"", v2([0.5, 0.3, 0.2]), v2([0.3, 0.5, 0.2])).agreed
    assert kinds(compare(c, b"", v2([0.5, 0.3, 0.2]), v2([0.5, 0.1, 0.4]))) == ["top_k"]
    assert top_classes([1.0, 3.0, 3.0], 1) == 1  # ties: the first, like numpy
    assert flatten([[1, [2]], [3]]) == [1, 2, 3]


@pytest.mark.parametrize("primary", [
    b"not json", b"[1,2]", b'{"outputs": 3}', b'{"outputs": [{"name": "x"}]}',
    b'{"outputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}',
    b'{"outputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}',
    b'{"outputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}',
])
def test_an_unreadable_primary_is_uncomparable(primary: bytes) -> None:
    res = compare(cfg("v2_tensors"), b"", Answer(200, primary), v2([1.0], name="x"))
    assert not res.comparable and judge(res) == (UNCOMPARABLE, ())


@pytest.mark.parametrize("shadow", [
    b"not json", b'{"outputs": [{"name": "probs", "shape": [1], "datatype": "FP32", '
                 b'"data": ["x"]}]}',
    b'{"outputs": [{"name": "probs", "shape": [1], "datatype": "FP32", "data": 7}]}',
])
def test_an_unreadable_shadow_is_a_difference(shadow: bytes) -> None:
    res = compare(cfg("v2_tensors"), b"", v2([1.0]), Answer(200, shadow))
    assert res.comparable and kinds(res) == ["unparsable"]


def test_deep_nesting_is_uncomparable_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for kind in ("json", "v2_tensors", "openai_chat"):
        res = compare(cfg(kind), b"", Answer(200, deep), Answer(200, b"{}"))
        assert not res.differences or res.comparable  # no exception, a verdict


# ---------------------------------------------------------------- OpenAI chat


def chat(*texts: str, finish: str = "stop", **extra: Any) -> Answer:
    return ok({"id": "chatcmpl-1", "created": 1, "choices": [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish}
        for i, t in enumerate(texts)], **extra})


def stream(text: str, finish: str = "stop", pieces: int = 3) -> Answer:
    step = max(1, len(text) // pieces)
    parts = [text[i:i + step] for i in range(0, len(text), step)]
    lines = [b'data: ' + json.dumps({"id": "x", "choices": [
        {"index": 0, "delta": {"role": "assistant"}}]}).encode()]
    lines += [b'data: ' + json.dumps({"id": "x", "choices": [
        {"index": 0, "delta": {"content": p}, "finish_reason": None}]}).encode() for p in parts]
    lines.append(b'data: ' + json.dumps({"id": "x", "choices": [
        {"index": 0, "delta": {}, "finish_reason": finish}]}).encode())
    lines.append(b"data: [DONE]")
    return Answer(200, b"\n\n".join(lines) + b"\n\n", "text/event-stream")


def test_chat_exact_and_normalized_text() -> None:
    c = cfg("openai_chat")
    res = compare(c, b"", chat("Paris is the capital."), chat("  paris IS the\ncapital. "))
    assert res.agreed and res.detail["exact"] is False and res.detail["normalized"] is True
    exact = cfg({"openai_chat": {"text": "exact"}})
    assert kinds(compare(exact, b"", chat("Paris"), chat("paris"))) == ["text"]
    assert kinds(compare(c, b"", chat("Paris"), chat("Lyon"))) == ["text"]
    assert normalize("ﬁne\u00a0 TEXT") == "fine text"


def test_chat_finish_reason_choices_and_length() -> None:
    c = cfg("openai_chat")
    assert kinds(compare(c, b"", chat("a"), chat("a", finish="length"))) == ["finish_reason"]
    assert kinds(compare(c, b"", chat("a", "b"), chat("a"))) == ["choices"]
    res = compare(cfg({"openai_chat": {"text": "none", "max_length_change": 0.5}}), b"",
                  chat("x" * 100), chat("y" * 120))
    assert res.agreed and res.detail["length_change"] == 0.2
    res = compare(cfg({"openai_chat": {"text": "none", "max_length_change": 0.5}}), b"",
                  chat("x" * 100), chat("y" * 30))
    assert kinds(res) == ["length"]


def test_chat_json_mode_checks_the_shadow_answer_is_json() -> None:
    asked = json.dumps({"model": "m", "response_format": {"type": "json_object"}}).encode()
    c = cfg({"openai_chat": {"text": "none"}})
    res = compare(c, asked, chat('{"city": "Paris"}'), chat('{"city": "Lyon"}'))
    assert res.agreed and res.detail["shadow_json_valid"] is True
    res = compare(c, asked, chat('{"city": "Paris"}'), chat("Sure! {city: Paris}"))
    assert kinds(res) == ["json"]
    # not asked for JSON: not checked
    assert compare(c, b'{"model": "m"}', chat('{"a": 1}'), chat("text")).agreed


def test_chat_streams_are_assembled_and_compared_with_whole_answers() -> None:
    c = cfg("openai_chat")
    text = "The quick brown fox jumps over the lazy dog."
    # the same text, streamed by one and whole by the other: a client reading the primary's
    # framing breaks on the shadow's (the shadow review's item 2)
    assert kinds(compare(c, b"", stream(text), chat(text))) == ["stream"]
    assert kinds(compare(c, b"", chat(text), stream(text))) == ["stream"]
    assert compare(c, b"", stream(text, pieces=5), stream(text, pieces=2)).agreed
    assert kinds(compare(c, b"", stream(text), stream(text, finish="length"))) == [
        "finish_reason"]
    assert [ch.text for ch in read_choices(stream(text).body, "text/event-stream")] == [text]


def test_chat_a_stream_ends_at_its_done_line() -> None:
    """A client (OpenAI's SDKs, every SSE reader of these APIs) stops reading at `data:
    [DONE]`: chunks a shadow sends after it are never seen, so a shadow whose stream says
    [DONE] before its last words and its finish_reason does not agree with one that
    finishes first."""
    c = cfg("openai_chat")
    text = "The quick brown fox jumps over the lazy dog."
    whole = stream(text)
    lines = whole.body.split(b"\n\n")
    done = lines.index(b"data: [DONE]")
    # [DONE] moved before the last two chunks (the last words and the finish_reason)
    early = [*lines[:done - 2], b"data: [DONE]", *lines[done - 2:done], *lines[done + 1:]]
    cut = Answer(200, b"\n\n".join(early), "text/event-stream")
    seen = read_choices(cut.body, "text/event-stream")
    assert seen[0].finish_reason is None and seen[0].text != text
    assert set(kinds(compare(c, b"", whole, cut))) == {"text", "finish_reason"}
    # and a primary whose stream ends so is read as its clients read it (a shadow sending
    # all of it then differs)
    assert not compare(c, b"", cut, whole).agreed


def test_chat_a_stream_carrying_an_error_is_not_an_answer() -> None:
    """OpenAI-compatible servers report a failure mid-stream as an event holding "error"
    (OpenAI, vLLM), and clients (OpenAI's SDKs) raise on it: the primary's cut answer was
    read as its text so far, and the shadow, answering whole, was counted as disagreeing
    with it (the primary's failure held against the shadow, toward the promotion gate); a
    shadow ending its stream with an error agreed if its text was whole."""
    c = cfg("openai_chat")
    text = "The quick brown fox jumps over the lazy dog."
    whole = stream(text)
    lines = whole.body.split(b"\n\n")
    error = b'data: ' + json.dumps({"error": {"message": "CUDA out of memory",
                                              "type": "server_error"}}).encode()
    failed = Answer(200, b"\n\n".join([*lines[:2], error, b"data: [DONE]"]) + b"\n\n",
                    "text/event-stream")
    res = compare(c, b"", failed, whole)
    assert not res.comparable and "error" in res.detail["why"]
    done = lines.index(b"data: [DONE]")
    late = Answer(200, b"\n\n".join([*lines[:done], error, b"data: [DONE]"]) + b"\n\n",
                  "text/event-stream")
    assert kinds(compare(c, b"", whole, late)) == ["unparsable"]
    # (an empty or null error field is no error, as clients read it)
    quiet = Answer(200, whole.body.replace(b'{"id": "x", "choices"', b'{"id": "x", "error": '
                                           b'null, "choices"'), "text/event-stream")
    assert compare(c, b"", whole, quiet).agreed


def test_chat_a_stream_is_read_by_events_as_a_client_reads_it() -> None:
    """An SSE event may carry its JSON over several `data:` lines (joined by line feeds),
    with `\r\n` or `\r` line endings, comments and `event:`/`id:` fields: read line by
    line, such a stream was halves that are not JSON, and a shadow answering so was counted
    as unparsable (a failure toward the gate) while every client read it whole."""
    c = cfg("openai_chat")
    text = "The quick brown fox jumps over the lazy dog."
    whole = stream(text)
    events = [e for e in whole.body.split(b"\n\n") if e]
    split = []
    for e in events:
        data = e[len(b"data: "):]
        if data.startswith(b"{"):  # the JSON over two data lines (one without the space)
            cut = data.index(b",") + 1
            e = b": a comment\r\nevent: chunk\r\nid: 7\r\ndata: " + data[:cut] \
                + b"\rdata:" + data[cut:]
        split.append(e)
    shadow = Answer(200, b"\r\n\r\n".join(split) + b"\r\n\r\n", "text/event-stream")
    assert [ch.text for ch in read_choices(shadow.body, "text/event-stream")] == [text]
    assert compare(c, b"", whole, shadow).agreed
    # the last event without its blank line is read too; `data` alone is an empty line
    last = read_choices(b"data\n\n" + events[0] + b"\n\n" + events[1], "text/event-stream")
    assert [ch.text for ch in last] == [text[:len(text) // 3]]


@pytest.mark.timeout(60)
def test_chat_a_stream_of_many_pieces_is_read_in_linear_time() -> None:
    """A stream's text (and a tool call's arguments) was joined piece by piece with `+=`,
    copying the text so far at each piece: a shadow streaming 40,000 pieces of 40
    characters (3.4 MB, within max_answer_bytes up to 64 MiB) took 3-8 s of the one
    comparison thread (every route's comparisons waiting behind it, their copies holding
    their slots), 64 MiB of them about half an hour."""
    import time

    piece = "a" * 40
    text = b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % piece.encode()
    call = (b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
            b'{"name":"","arguments":"%s"}}]}}]}\n\n' % piece.encode())
    n = 40_000
    for chunk in (text, call):
        started = time.perf_counter()
        got = read_choices(chunk * n, "text/event-stream")
        took = time.perf_counter() - started
        assert len(got[0].text) == n * 40 or len(got[0].tools[0][1]) == n * 40
        assert took < 2.0, f"{took:.1f} s to read {n} pieces"


def test_chat_tool_calls_and_completions() -> None:
    def tools(args: str) -> Answer:
        return ok({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "weather", "arguments": args}}]}}]})

    c = cfg("openai_chat")
    assert compare(c, b"", tools('{"city":"Paris"}'), tools('{"city":"Paris"}')).agreed
    assert kinds(compare(c, b"", tools('{"city":"Paris"}'), tools('{"city":"Rome"}'))) == [
        "tool_calls"]
    # arguments are JSON: spacing and key order are not a different call (but 1 is not "1")
    spaced = tools('{ "unit": "C",\n  "city": "Paris" }')
    assert compare(c, b"", tools('{"city":"Paris","unit":"C"}'), spaced).agreed
    assert kinds(compare(cfg({"openai_chat": {"text": "exact"}}), b"",
                         tools('{"city":"Paris","unit":"C"}'), spaced)) == ["tool_calls"]
    assert kinds(compare(c, b"", tools('{"n":1}'), tools('{"n":"1"}'))) == ["tool_calls"]
    assert kinds(compare(c, b"", tools('{"n":true}'), tools('{"n":1}'))) == ["tool_calls"]
    comp = ok({"choices": [{"index": 0, "text": "hello", "finish_reason": "stop"}]})
    comp2 = ok({"id": "other", "choices": [{"index": 0, "text": "Hello", "finish_reason": "stop"}]})
    assert compare(c, b"", comp, comp2).agreed


@pytest.mark.parametrize("body", [b"{}", b"[]", b'{"choices": 3}', b'{"choices": [1]}',
                                  b'{"choices": [{"index": -1}]}', b"data: nope\n\n",
                                  b"data: [DONE]\n\n"])
def test_chat_unreadable_primary_is_uncomparable(body: bytes) -> None:
    assert not compare(cfg("openai_chat"), b"", Answer(200, body), chat("x")).comparable


# ---------------------------------------------------------------- generic JSON


def test_json_diff_paths_and_ignores() -> None:
    a = {"id": "1", "created": 5, "data": [{"id": "x", "v": 1}, {"id": "y", "v": 2}], "m": {}}
    b = {"id": "2", "created": 6, "data": [{"id": "z", "v": 1.0}, {"id": "w", "v": 3}],
         "extra": True}
    diffs, total = diff_json(a, b)
    assert [(d.kind, d.path) for d in diffs] == [
        ("value", "id"), ("value", "created"), ("value", "data[0].id"), ("value", "data[1].id"),
        ("value", "data[1].v"), ("missing", "m"), ("extra", "extra")]
    assert total == 7
    ignore = compile_paths(("id", "created", "data[*].id", "m", "extra"))
    diffs, _ = diff_json(a, b, ignore)
    assert [d.path for d in diffs] == ["data[1].v"]
    c = cfg({"json": {"ignore": ["id", "created", "data[*].id", "m", "extra"]}})
    assert kinds(compare(c, b"", ok(a), ok(b))) == ["value"]


def test_json_types_and_lengths() -> None:
    diffs, _ = diff_json({"a": True, "b": [1, 2], "c": None}, {"a": 1, "b": [1], "c": 0})
    assert [(d.kind, d.path) for d in diffs] == [("type", "a"), ("length", "b"),
                                                 ("type", "c")]
    diffs, total = diff_json(list(range(200)), [x + 1 for x in range(200)], limit=5)
    assert len(diffs) == 5 and total == 200


def test_json_non_json_answers_compare_as_bytes() -> None:
    c = cfg("json")
    assert compare(c, b"", Answer(200, b"hello"), Answer(200, b"hello")).agreed
    assert kinds(compare(c, b"", Answer(200, b"hello"), Answer(200, b"bye"))) == ["body"]
    assert kinds(compare(c, b"", ok({"a": 1}), Answer(200, b"<html>"))) == ["unparsable"]


# ---------------------------------------------------------------- the noise floor


def test_judge_cancels_differences_the_primary_has_with_itself() -> None:
    c = cfg("openai_chat")
    res = compare(c, b"", chat("A", finish="stop"), chat("B", finish="length"))
    assert judge(res) == (DISAGREED, res.differences)
    noise = compare(c, b"", chat("A"), chat("C"))  # the primary's text is random
    outcome, left = judge(res, noise)
    assert outcome == DISAGREED and left == (Difference("finish_reason",
                                                        "choices[0].finish_reason"),)
    assert judge(compare(c, b"", chat("A"), chat("B")), noise) == (NOISE, ())
    assert judge(compare(c, b"", chat("A"), chat("B")), None, {"choices[0].text"}) == (NOISE, ())
    assert judge(compare(c, b"", chat("A"), chat("a"))) == (AGREED, ())


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("text, tokens", [
    ("id", (("key", "id"),)),
    ("choices[*].message.content", (("key", "choices"), ("[*]", ""), ("key", "message"),
                                    ("key", "content"))),
    ("*.timestamp", (("*", ""), ("key", "timestamp"))),
    ("outputs[0]", (("key", "outputs"), ("index", 0))),
    ("[*]", (("[*]", ""),)),
])
def test_path_grammar(text: str, tokens: tuple[Any, ...]) -> None:
    assert parse_path(text) == tokens


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a[", "a[x]", "a b", "a[-1]",
                                 "x" * 300, "a]"])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a JSON path"):
        parse_path(bad)


def test_match_render_and_redact() -> None:
    pats = compile_paths(("messages[*].content", "user"))
    assert matches(pats, ["messages", 3, "content"])
    assert matches(pats, ["user", "email"])  # a pattern covers its subtree
    assert not matches(pats, ["messages", 3, "role"])
    assert render(["choices", 0, "text"]) == "choices[0].text"
    assert render([]) == "$" and render(["a.b"]) == '["a.b"]'
    doc = {"messages": [{"role": "user", "content": "my card is 4111"}], "user": {"e": 1},
           "model": "m"}
    assert redact(doc, pats) == {"messages": [{"role": "user", "content": "[redacted]"}],
                                 "user": "[redacted]", "model": "m"}
    assert redact(doc, ()) is doc


def test_a_path_through_long_keys_is_cut_in_what_is_kept() -> None:
    """Keys can come from the request (answers keyed by the caller's ids): a 60 KB id made
    each difference's path 60 KB, and a disagreement keeps 16 of them, every copy of the
    route's `keep` records (review 9: tens of MB per route and process, published to the
    store). The path kept is cut; its start still says where."""
    long_id = "u" * 60_000
    diffs, total = diff_json({long_id: {f"s{i}": i for i in range(16)}},
                             {long_id: {f"s{i}": -i - 1 for i in range(16)}})
    assert total == 16
    assert all(len(d.path) <= 256 for d in diffs), max(len(d.path) for d in diffs)
    assert diffs[0].path.startswith("u" * 100)
    assert render(["a", 0, "b"]) == "a[0].b"  # short paths as they were


@pytest.mark.parametrize("dtype", [["FP32"], {"t": "FP32"}])
def test_a_datatype_that_is_not_a_string_is_compared_not_raised(dtype: Any) -> None:
    """A primary whose tensor's datatype was a list or an object raised TypeError (unhashable)
    out of the comparison: the copy was counted a failure ('error', with a warning logged
    for each one), never compared (hostile shadow review)."""
    p = ok({"outputs": [{"name": "x", "shape": [1], "datatype": dtype, "data": [1]}]})
    s = ok({"outputs": [{"name": "x", "shape": [1], "datatype": dtype, "data": [2]}]})
    assert kinds(compare(cfg("v2_tensors"), b"", p, s)) == ["values"]


def test_argmax_a_nan_score_is_no_decision() -> None:
    """A shadow whose scores are NaN (an fp16 overflow, a broken build) has decided nothing:
    Python's max (like numpy's argmax) puts the top class at the first NaN, so a shadow
    answering NaN everywhere 'agreed' with every row whose top class is the first one (a
    fraud model's 'legit' class, 99 % of traffic) and could open the promotion gate."""
    nan = "NaN"
    for spec, kind in (({"argmax": True}, "argmax"), ({"top_k": 1}, "argmax"),
                       ({"top_k": 2}, "top_k")):
        c = cfg({"v2_tensors": spec})
        p = v2([0.8, 0.15, 0.05, 0.9, 0.06, 0.04], [2, 3])
        broken = Answer(200, json.dumps({"outputs": [
            {"name": "probs", "shape": [2, 3], "datatype": "FP32",
             "data": [nan, nan, nan, nan, 0.1, 0.9]}]}).replace('"NaN"', "NaN").encode())
        res = compare(c, b"", p, broken)
        assert kinds(res) == [kind], (spec, res)
        assert res.detail["rows_agreed"] == 0, (spec, res)
        # NaN where the primary has NaN too is the same answer (NaN equals NaN)
        both = Answer(200, b'{"outputs":[{"name":"probs","shape":[1,3],"datatype":"FP32",'
                           b'"data":[NaN,0.9,0.1]}]}')
        assert compare(c, b"", both, Answer(200, both.body.replace(b"0.9", b"0.8"))).agreed
        if kind == "argmax":  # and the top class is among the scores that are numbers
            swapped = Answer(200, both.body.replace(b"0.9,0.1", b"0.1,0.9"))
            assert kinds(compare(c, b"", both, swapped)) == ["argmax"]


def test_argmax_rows_with_nan_in_the_same_place_are_decided_by_their_numbers() -> None:
    """Both answers with NaN at the same index and scores within tolerance of each other: the
    decision was taken by Python's max, which keeps a NaN it starts from, so with the NaN
    first every such row agreed whatever the other scores said, where the rule (a NaN
    score is no class) decides by the numbers: a near tie the shadow broke the other way
    is another class (found by hostile shadow review, sixth pass)."""
    body = (b'{"outputs":[{"name":"probs","shape":[1,3],"datatype":"FP32",'
            b'"data":[NaN,0.5,0.5000001]}]}')
    p = Answer(200, body)
    tie = Answer(200, body.replace(b"0.5,0.5000001", b"0.5000001,0.5"))
    for spec in ({"argmax": True}, {"top_k": 1}):
        res = compare(cfg({"v2_tensors": spec}), b"", p, tie)
        assert res.detail["values_close"] and kinds(res) == ["argmax"], (spec, res)
        assert compare(cfg({"v2_tensors": spec}), b"", p,
                       Answer(200, body.replace(b"0.5,", b"0.4999999,"))).agreed


def test_tensor_a_comparison_of_nothing_is_not_an_agreement() -> None:
    """`outputs: [probs]` and a primary answer without `probs` (the client asked for other
    outputs, or the name is mistyped): nothing was compared, and every such answer of the
    shadow, whatever it held, counted as agreed. And an answer naming an output twice was
    read by its last tensor, where a client reading the first gets the other one."""
    c = cfg({"v2_tensors": {"outputs": ["probs"]}})
    res = compare(c, b"", v2([1.0, 0.0], name="label"), v2([0.0, 9.0], name="label"))
    assert not res.comparable and judge(res) == (UNCOMPARABLE, ()), res
    # a named output the shadow has and the primary lacks is still a difference
    assert kinds(compare(c, b"", v2([1.0], name="label"), v2([1.0]))) == ["extra_output"]
    twice = ok({"outputs": [
        {"name": "probs", "shape": [2], "datatype": "FP32", "data": [9.0, 9.0]},
        {"name": "probs", "shape": [2], "datatype": "FP32", "data": [1.0, 0.0]}]})
    res = compare(cfg("v2_tensors"), b"", v2([1.0, 0.0]), twice)
    assert kinds(res) == ["unparsable"], res
    assert not compare(cfg("v2_tensors"), b"", twice, v2([1.0, 0.0])).comparable
    with pytest.raises(ValueError, match="outputs"):
        cfg({"v2_tensors": {"outputs": []}})


def test_chat_a_whole_answer_repeating_a_choice_index_is_not_read_as_one_choice() -> None:
    """A whole (not streamed) answer whose choices repeat an index was read as one choice
    with the texts joined: a shadow answering [{index 0: "Par"}, {index 0: "is"}] agreed
    with "Paris", where a client reading choices[0] gets "Par"."""
    c = cfg("openai_chat")
    split = ok({"choices": [
        {"index": 0, "message": {"content": "Par"}, "finish_reason": "length"},
        {"index": 0, "message": {"content": "is"}, "finish_reason": "stop"}]})
    res = compare(c, b"", chat("Paris"), split)
    assert not res.agreed and kinds(res) == ["unparsable"], res
    assert not compare(c, b"", split, chat("Paris")).comparable
    # a stream sends a choice in pieces: its index repeats from chunk to chunk
    assert compare(c, b"", stream("Paris", pieces=1), stream("Paris")).agreed


def test_chat_a_legacy_function_call_is_compared_as_a_tool_call() -> None:
    """OpenAI's `function_call` (before `tool_calls`; still sent by servers for clients that
    ask with `functions`) was not read: a shadow calling another function, or the same one
    with other arguments, agreed (both texts empty, no tool calls seen)."""
    def call(name: str, args: str) -> Answer:
        return ok({"choices": [{"index": 0, "finish_reason": "function_call", "message": {
            "role": "assistant", "content": None,
            "function_call": {"name": name, "arguments": args}}}]})

    def streamed(name: str, args: str) -> Answer:
        chunks = [{"function_call": {"name": name, "arguments": ""}},
                  {"function_call": {"arguments": args[:5]}},
                  {"function_call": {"arguments": args[5:]}}]
        lines = [b"data: " + json.dumps({"choices": [{"index": 0, "delta": d}]}).encode()
                 for d in chunks]
        lines.append(b"data: " + json.dumps({"choices": [
            {"index": 0, "delta": {}, "finish_reason": "function_call"}]}).encode())
        return Answer(200, b"\n\n".join(lines) + b"\n\n", "text/event-stream")

    c = cfg("openai_chat")
    p = call("weather", '{"city":"Paris"}')
    assert compare(c, b"", p, call("weather", '{ "city": "Paris" }')).agreed
    assert kinds(compare(c, b"", p, call("delete_account", '{"city":"Paris"}'))) == [
        "tool_calls"]
    assert kinds(compare(c, b"", p, call("weather", '{"city":"Rome"}'))) == ["tool_calls"]
    sp = streamed("weather", '{"city":"Paris"}')
    assert compare(c, b"", sp, streamed("weather", '{"city": "Paris"}')).agreed
    assert kinds(compare(c, b"", sp, streamed("weather", '{"city":"Rome"}'))) == ["tool_calls"]
    assert kinds(compare(c, b"", p, sp)) == ["stream"]  # (the framing differs)


def test_tensor_a_numeric_tensor_of_booleans_is_unreadable() -> None:
    """JSON's true and false in an FP32 or INT64 tensor read as 1 and 0 (Python's bools are
    ints): a shadow answering [false, true] agreed with the primary's [0.0, 1.0], where a
    client decoding the tensor as numbers (Go's float32, a typed reader) fails. As strings
    are, booleans in a numeric tensor are unreadable (true is not 1, as for the rest)."""
    c = cfg("v2_tensors")
    res = compare(c, b"", v2([0.0, 1.0]), v2([False, True]))
    assert kinds(res) == ["unparsable"], res
    assert kinds(compare(c, b"", v2([0, 1], dtype="INT64"), v2([0, True], dtype="INT64"))) == [
        "unparsable"]
    assert not compare(c, b"", v2([False, True]), v2([0.0, 1.0])).comparable


def test_tensor_shadow_data_nested_otherwise_than_its_shape_is_a_difference() -> None:
    """Nested data was flattened whatever its nesting: a shadow answering shape [2, 2] with
    data [[1, 2, 3], [4]] agreed with [[1, 2], [3, 4]], where a client reading data[0]
    gets three values. Flat data, and nesting that follows the shape, still agree."""
    c = cfg("v2_tensors")
    p = v2([[1.0, 2.0], [3.0, 4.0]], [2, 2])
    for ragged in ([[1.0, 2.0, 3.0], [4.0]], [[1.0], [2.0, 3.0, 4.0]], [[1.0, 2.0], 3.0, 4.0],
                   [[[1.0, 2.0]], [[3.0, 4.0]]]):
        res = compare(c, b"", p, v2(ragged, [2, 2]))
        assert kinds(res) == ["shape"], (ragged, res)
    assert compare(c, b"", p, v2([1.0, 2.0, 3.0, 4.0], [2, 2])).agreed
    assert compare(c, b"", p, v2([[1.0, 2.0], [3.0, 4.0]], [2, 2], rid="z")).agreed
    assert compare(c, b"", v2([[["a"], ["b"]]], [1, 2, 1], dtype="BYTES"),
                   v2([[["a"], ["b"]]], [1, 2, 1], dtype="BYTES", rid="z")).agreed
