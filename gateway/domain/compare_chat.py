"""OpenAI-style chat/completions answer comparison, per choice.

Owns `read_choices` (the text, tool calls and finish_reason of each choice, from a whole
JSON answer or assembled from an SSE stream of chunks) and `compare_chat`, the
`compare: openai_chat` kind: exact and normalized text equality (Unicode NFKC, case and
whitespace folded), finish_reason, valid JSON when the request asked for JSON
(`response_format`), and the change of the text's length. Pure.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.config_shadow import OpenAIChatCompare
from gateway.domain.compare_json import diff_json, loads
from gateway.domain.comparison import Comparison, Difference

__all__ = ["Choice", "asks_for_json", "compare_chat", "normalize", "read_choices"]

_SPACE = re.compile(r"\s+")


@dataclass(slots=True)
class Choice:
    text: str = ""
    tools: list[tuple[str, str]] = field(default_factory=list)  # (function name, arguments)
    finish_reason: str | None = None
    # (a stream's pieces, joined once at its end: `+=` on each piece copied the text so far
    # every time, and a stream of tiny pieces up to max_answer_bytes took minutes)
    parts: list[str] = field(default_factory=list)
    tool_parts: list[tuple[list[str], list[str]]] = field(default_factory=list)

    def joined(self) -> Choice:
        self.text = "".join(self.parts)
        self.tools = [("".join(n), "".join(a)) for n, a in self.tool_parts]
        self.parts, self.tool_parts = [], []
        return self


def normalize(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _content(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(p.get("text", "") for p in v
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _add_tools(c: Choice, calls: Any, streamed: bool) -> None:
    if not isinstance(calls, list):
        return
    for n, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        fn = call.get("function")
        if not isinstance(fn, dict):
            fn = {}
        name, args = fn.get("name"), fn.get("arguments")
        name = name if isinstance(name, str) else ""
        args = args if isinstance(args, str) else ""
        at = call.get("index", n) if streamed else len(c.tool_parts)
        if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at < 1024:
            continue
        while len(c.tool_parts) <= at:
            c.tool_parts.append(([], []))
        names, pieces = c.tool_parts[at]  # a stream sends them in pieces
        names.append(name)
        pieces.append(args)


def _fold(choices: dict[int, Choice], items: Any, streamed: bool) -> None:
    if not isinstance(items, list):
        raise ValueError("no 'choices' list")
    for n, ch in enumerate(items):
        if not isinstance(ch, dict):
            raise ValueError("a choice is not an object")
        idx = ch.get("index", n)
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < 1024:
            raise ValueError("a choice has a bad index")
        if not streamed and idx in choices:  # (a stream's pieces repeat it; one answer not:
            raise ValueError(f"two choices have index {idx}")  # a client reads the first)
        c = choices.setdefault(idx, Choice())
        msg = ch.get("delta") if streamed else ch.get("message")
        if isinstance(msg, dict):
            c.parts.append(_content(msg.get("content")))
            _add_tools(c, msg.get("tool_calls"), streamed)
            fn = msg.get("function_call")  # (OpenAI's before tool_calls: one call, index 0)
            if isinstance(fn, dict):
                _add_tools(c, [{"function": fn, "index": 0}], streamed)
        elif isinstance(ch.get("text"), str):  # completions
            c.parts.append(ch["text"])
        if isinstance(ch.get("finish_reason"), str):
            c.finish_reason = ch["finish_reason"]


def _streamed(body: bytes, content_type: str) -> bool:
    return content_type == "text/event-stream" or body.lstrip().startswith(b"data:")


def _events(body: bytes) -> Iterator[bytes]:
    """The data of each event of an event stream, as a client's parser reads it (WHATWG
    HTML's rules): an event ends at a blank line, its `data:` lines (one space after the
    colon dropped) joined by line feeds, comments and other fields skipped; the last event
    too when the stream ends without its blank line. (Read line by line, one JSON chunk
    written over two `data:` lines was two halves that were not JSON: no answer.)"""
    lines: list[bytes] = []
    for line in body.splitlines():  # (bytes: at \n, \r\n and \r, as the spec's parser)
        if not line:
            if lines:
                yield b"\n".join(lines)
                lines = []
            continue
        field, _, value = line.partition(b":")
        if field == b"data":  # (a line `data` alone is an empty data line)
            lines.append(value[1:] if value.startswith(b" ") else value)
    if lines:
        yield b"\n".join(lines)


def read_choices(body: bytes, content_type: str = "") -> list[Choice]:
    """Every choice of an answer, in index order; ValueError when it is not one."""
    choices: dict[int, Choice] = {}
    if _streamed(body, content_type):
        seen = False
        for data in _events(body):
            data = data.strip()
            if data == b"[DONE]":
                break  # (a client stops reading here: what follows is never seen)
            if not data:
                continue
            chunk = loads(data)
            if isinstance(chunk, dict) and chunk.get("error"):
                # a failure reported mid-stream (OpenAI, vLLM): clients raise on it, so
                # what came before is no answer (the primary's: not held against the shadow)
                raise ValueError("the stream carries an error event")
            if isinstance(chunk, dict) and "choices" in chunk:
                _fold(choices, chunk["choices"], True)
                seen = True
        if not seen:
            raise ValueError("a stream without chunks of choices")
    else:
        doc = loads(body)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        _fold(choices, doc.get("choices"), False)
    return [choices[i].joined() for i in sorted(choices)]


def asks_for_json(request: bytes) -> bool:
    """Whether the request asked for a JSON answer (`response_format` json_object or
    json_schema)."""
    try:
        doc = loads(request)
    except ValueError:
        return False
    fmt = doc.get("response_format") if isinstance(doc, dict) else None
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _same_args(a: str, b: str) -> bool:
    """Tool call arguments that hold the same JSON (`{"a": 1}` is `{"a":1}`: spacing and
    key order are how a model writes, not what it calls with; true is still not 1)."""
    try:
        return diff_json(json.loads(a), json.loads(b), limit=0)[1] == 0
    except (ValueError, RecursionError):
        return False


def _same_calls(p: list[tuple[str, str]], s: list[tuple[str, str]]) -> bool:
    return len(p) == len(s) and all(pn == sn and (pa == sa or _same_args(pa, sa))
                                    for (pn, pa), (sn, sa) in zip(p, s, strict=True))


def compare_chat(cfg: OpenAIChatCompare, request: bytes, primary: bytes, shadow: bytes,
                 p_type: str = "", s_type: str = "") -> Comparison:
    try:
        pc = read_choices(primary, p_type)
    except (ValueError, RecursionError) as exc:
        return Comparison(False, (), {"why": f"the primary's answer: {exc}"})
    try:
        sc = read_choices(shadow, s_type)
    except (ValueError, RecursionError):
        return Comparison(True, (Difference("unparsable", "$"),))
    diffs: list[Difference] = []
    if _streamed(primary, p_type) != _streamed(shadow, s_type):
        # the same request, answered as a stream by one and whole by the other: promoted,
        # the shadow breaks every client reading the primary's framing
        diffs.append(Difference("stream", "$"))
    if len(pc) != len(sc):
        diffs.append(Difference("choices", "choices"))
    want_json = asks_for_json(request)
    exact = normal = True
    changes: list[float] = []
    detail: dict[str, Any] = {}
    for i, (p, s) in enumerate(zip(pc, sc, strict=False)):
        at = f"choices[{i}]"
        same = p.text == s.text
        same_n = same or normalize(p.text) == normalize(s.text)
        exact, normal = exact and same, normal and same_n
        if (cfg.text == "exact" and not same) or (cfg.text == "normalized" and not same_n):
            diffs.append(Difference("text", f"{at}.text"))
        if cfg.text == "none":
            if [n for n, _ in p.tools] != [n for n, _ in s.tools]:
                diffs.append(Difference("tool_calls", f"{at}.tool_calls"))
        elif p.tools != s.tools and (cfg.text == "exact" or not _same_calls(p.tools, s.tools)):
            diffs.append(Difference("tool_calls", f"{at}.tool_calls"))
        if cfg.finish_reason and p.finish_reason != s.finish_reason:
            diffs.append(Difference("finish_reason", f"{at}.finish_reason"))
        if want_json:
            ok_p, ok_s = _valid_json(p.text), _valid_json(s.text)
            detail["shadow_json_valid"] = detail.get("shadow_json_valid", True) and ok_s
            if ok_p and not ok_s:
                diffs.append(Difference("json", f"{at}.json"))
        change = (len(s.text) - len(p.text)) / max(len(p.text), 1)
        changes.append(change)
        if cfg.max_length_change is not None and abs(change) > cfg.max_length_change:
            diffs.append(Difference("length", f"{at}.length"))
    detail.update(exact=exact, normalized=normal,
                  length_change=round(sum(changes) / len(changes), 4) if changes else 0.0)
    return Comparison(True, tuple(diffs), detail)
