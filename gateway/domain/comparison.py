"""The values of shadow answer comparison, and the JSON paths they name.

Owns `Answer` (an assembled answer) and `decoded` (its body without its Content-Encoding,
bounded), `Difference` (what differs, and where), `Comparison`
(a comparison's differences and measurements), the matching of JSON paths against the
patterns of the config (`gateway.config_jsonpaths.parse_path`), and redaction by path.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from gateway.config_jsonpaths import PathToken, parse_path

__all__ = [
    "MAX_PATH",
    "Answer",
    "Comparison",
    "Difference",
    "Pattern",
    "Step",
    "compile_paths",
    "decoded",
    "matches",
    "model_answered",
    "redact",
    "render",
]

#: one step of a concrete path: a key (str) or an index (int)
Step = str | int
Pattern = tuple[PathToken, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """One side's answer, assembled (a stream's bytes joined, up to the size bound)."""

    status: int
    body: bytes
    content_type: str = ""  # the media type, lower-cased, without parameters
    encoding: str = ""  # the Content-Encoding, lower-cased ("" when none)


#: an error body is small: a larger 2xx body is taken for a model's answer unread
ERROR_BODY_MAX = 64 * 1024


def model_answered(a: Answer, protocol: str) -> bool:
    """Whether `a` (the primary's) is a model's answer, what the promotion gate counts: a
    2xx, and on a model route (`protocol: v2 | openai`) not an error object in a 200
    (`{"error": ...}`, its error not empty or null, as the Open Inference Protocol's and
    OpenAI's error bodies are written, which some servers send with 200): such an answer
    says nothing of the model, and both versions sending it would count as agreeing."""
    if not 200 <= a.status < 300:
        return False
    if protocol == "http" or len(a.body) > ERROR_BODY_MAX:
        return True
    if a.encoding:  # (read as the client reads it: a gzip error object is one too)
        plain = decoded(a, ERROR_BODY_MAX)
        if plain is None:
            return True  # (larger than an error body, or not what its coding says)
        a = plain
    if a.body.lstrip()[:1] != b"{" or b'"error"' not in a.body:
        return True
    try:
        doc = json.loads(a.body)
    except (ValueError, RecursionError):
        return True
    # (an empty or null error field is no error, as clients read it: OpenAI's Responses
    # API answers `"error": null` in every response; compare_chat reads a stream so too)
    return not (isinstance(doc, dict) and bool(doc.get("error")))


#: Content-Encoding -> zlib's wbits (deflate is zlib-wrapped, or raw from some servers)
_CODINGS = {"gzip": (31,), "x-gzip": (31,), "deflate": (15, -15)}


def decoded(a: Answer, limit: int) -> Answer | None:
    """`a` with its body decoded from its Content-Encoding (gzip, deflate), so answers are
    compared by what they say, not by how they were compressed; `a` itself when it has no
    coding, or one not decoded here (compared as bytes). None when the bytes are not what
    the coding says, or decode to more than `limit` bytes (never more is held)."""
    wbits = _CODINGS.get(a.encoding)
    if wbits is None:
        return a
    for w in wbits:
        d = zlib.decompressobj(w)
        try:
            body = d.decompress(a.body, limit + 1)
        except zlib.error:
            continue
        if len(body) > limit or not d.eof or d.unused_data:
            return None  # too large, cut short, or more than one stream
        return Answer(a.status, body, a.content_type)
    return None


@dataclass(frozen=True, slots=True)
class Difference:
    """`kind` is one of a small fixed set per comparison (a metric label); `path` says
    where (the unit of the noise floor: a path on which the primary disagrees with itself
    is noise)."""

    kind: str
    path: str


@dataclass(frozen=True, slots=True)
class Comparison:
    #: False: the primary's answer could not be read as the protocol says (not counted)
    comparable: bool
    differences: tuple[Difference, ...] = ()
    #: measurements, whatever the verdict (max_abs_diff, exact, length_change, ...)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def agreed(self) -> bool:
        return self.comparable and not self.differences


@lru_cache(maxsize=256)
def compile_paths(texts: tuple[str, ...]) -> tuple[Pattern, ...]:
    return tuple(parse_path(t) for t in texts)


def _step_matches(tok: PathToken, step: Step) -> bool:
    kind, val = tok
    if isinstance(step, int):
        return kind == "[*]" or (kind == "index" and val == step)
    return kind == "*" or (kind == "key" and val == step)


def matches(patterns: Sequence[Pattern], steps: Sequence[Step]) -> bool:
    """Whether a pattern covers this path (a pattern covers its whole subtree)."""
    for pat in patterns:
        if len(pat) <= len(steps) and all(_step_matches(t, s) for t, s in zip(pat, steps,
                                                                                strict=False)):
            return True
    return False


#: a rendered path is cut past this: keys can come from the request (answers keyed by the
#: caller's ids), and paths are kept in records and counts, and published to the store
MAX_PATH = 256


def render(steps: Sequence[Step]) -> str:
    """['choices', 0, 'text'] -> 'choices[0].text' (the root is '$'); cut at MAX_PATH."""
    out = ""
    for s in steps:
        if isinstance(s, int):
            out += f"[{s}]"
        elif s and all(c.isalnum() or c in "_-$@:" for c in s):
            out += ("." if out else "") + s
        else:
            out += "[" + json.dumps(s) + "]"
        if len(out) > MAX_PATH:
            return out[:MAX_PATH - 3] + "..."
    return out or "$"


REDACTED = "[redacted]"


def redact(doc: Any, patterns: Sequence[Pattern], _at: tuple[Step, ...] = ()) -> Any:
    """A copy of `doc` with every value under a matching path replaced by "[redacted]"."""
    if not patterns:
        return doc
    if _at and matches(patterns, _at):
        return REDACTED
    if isinstance(doc, dict):
        return {k: redact(v, patterns, (*_at, k)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [redact(v, patterns, (*_at, i)) for i, v in enumerate(doc)]
    return doc
