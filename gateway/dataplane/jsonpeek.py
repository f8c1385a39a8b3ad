"""Find and rewrite the top-level `model` field of an OpenAI-style JSON body, cheaply.

Pure: works on bytes already read (a bounded prefix of the body), never parses more
than the top-level members it must walk. Duplicate top-level `model` keys are reported
as ambiguous, since backends disagree on which one wins (a routing-confusion vector).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["Ambiguous", "ModelField", "find_model", "rewrite_model"]

_decoder = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


class Ambiguous(ValueError):
    """The body names `model` more than once."""


@dataclass(frozen=True, slots=True)
class ModelField:
    value: str
    start: int  # byte offsets of the JSON value (including its quotes)
    end: int


def find_model(body: bytes) -> ModelField | None:
    """The top-level string `model` of a JSON object body, or None (not JSON, absent, cut)."""
    text = body.decode("utf-8", "replace")
    found: tuple[str, int, int] | None = None
    try:
        i = _WS.match(text, 0).end()  # type: ignore[union-attr]
        if text[i] != "{":
            return None
        i += 1
        while True:
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i] == "}":
                break
            key, i = _decoder.raw_decode(text, i)
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i] != ":":
                break
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
            start = i
            value, i = _decoder.raw_decode(text, i)
            if key == "model":
                if found is not None:
                    raise Ambiguous("the body has more than one top-level 'model' field")
                if isinstance(value, str):
                    found = (value, start, i)
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i] == ",":
                i += 1
                continue
            break
    except (ValueError, IndexError) as exc:
        if isinstance(exc, Ambiguous):
            raise
        # Not JSON, or cut at the peek limit: use what the complete members said.
    if found is None:
        return None
    value, s, e = found
    if text.isascii():
        return ModelField(value, s, e)
    return ModelField(value, len(text[:s].encode()), len(text[:e].encode()))


def rewrite_model(body: bytes, field: ModelField, new: str) -> bytes:
    return body[: field.start] + json.dumps(new).encode() + body[field.end :]
