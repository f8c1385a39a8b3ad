"""What `killgate shadow report` shows of a kept answer: the value where it differs.

Owns `value_at` (an answer's value at a difference's path, as domain/compare*.py name
them: `outputs[NAME].data` for a V2 tensor, `choices[0].text` for a chat answer, whole or
streamed, `data[3].id` for JSON). Why: the table showed the first 40 characters of each
body, which for a V2 or chat answer are the same boilerplate on both sides
(`{"model_name":"iris","model_version":"v…`), so the one thing a person reads the table for,
what the shadow answered instead, took `--json` and a JSON viewer. Pure.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["value_at"]

_STEP = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")
_MISSING = object()


def _chat_part(choice: dict[str, Any], step: str) -> Any:
    """A chat choice's `text` (its message's content, a completion's text) or `tool_calls`
    (the paths compare_chat.py names, which are not the JSON's own)."""
    got = choice.get("message")
    msg: dict[str, Any] = got if isinstance(got, dict) else {}
    if step in ("text", "length", "json"):
        for v in (msg.get("content"), choice.get("text")):
            if isinstance(v, str):
                return v
    if step == "tool_calls":
        return msg.get("tool_calls", msg.get("function_call", _MISSING))
    return _MISSING


def _streamed(body: str) -> Any:
    """An SSE answer as kept (its text): its chunks' choices, each delta's content joined."""
    texts: dict[int, str] = {}
    for line in body.splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        try:
            chunk = json.loads(line[5:])
        except (ValueError, RecursionError):  # (what the store held: anyone's who writes it)
            return _MISSING
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for c in choices if isinstance(choices, list) else []:
            if isinstance(c, dict) and isinstance(c.get("index", 0), int):
                got = c.get("delta")
                delta: dict[str, Any] = got if isinstance(got, dict) else {}
                piece = delta.get("content", c.get("text"))
                texts[c.get("index", 0)] = texts.get(c.get("index", 0), "") + (
                    piece if isinstance(piece, str) else "")
    if not texts:
        return _MISSING
    return {"choices": [{"text": texts.get(i, "")} for i in range(max(texts) + 1)]}


def value_at(body: Any, path: Any) -> tuple[bool, Any]:
    """(found, the value of `body` at `path`); not found for a path that names no value
    there (a status difference, `$`, a path cut short, an answer of another shape)."""
    if not isinstance(path, str) or path in ("", "$"):
        return False, None
    if isinstance(body, str):
        body = _streamed(body)
    at: Any = body
    for m in _STEP.finditer(path):
        name, key = m.group(1), m.group(2)
        if at is _MISSING:
            break
        if name is not None and isinstance(at, list):
            if name.isdigit():
                at = at[int(name)] if int(name) < len(at) else _MISSING
            else:  # a V2 output by its name
                at = next((t for t in at if isinstance(t, dict) and t.get("name") == name),
                          _MISSING)
        elif key is not None and isinstance(at, dict):
            at = at[key] if key in at else _chat_part(at, key)
        else:
            at = _MISSING
    return (False, None) if at is _MISSING or at is body else (True, at)
