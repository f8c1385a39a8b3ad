"""Protocol-aware outcomes (CONTRACT §5.6): does this answer say "model not loaded / not ready"?

Pure. Model servers answer a request for a model they do not hold in their own words, and
such an answer means the request was not processed: the proxy then moves it to another
version as if it had never been delivered. Recognised, by the route's `protocol`:

* `v2` (Open Inference Protocol: MLServer, Triton, KServe) on an inference path (`.../infer`,
  `.../generate`, `.../generate_stream`): 404, 400 or 503 with the protocol's error body
  `{"error": "<message>"}` whose message says the model is unknown, not found, not ready, not
  loaded or unavailable (MLServer "Model iris not found", Triton "Request for unknown model:
  'iris' is not found", KServe "Model with name iris is not ready"). Other 400s (a bad tensor,
  a missing input) are the client's and pass through;
* `openai`: 404 whose error has `"code": "model_not_found"` (OpenAI, LiteLLM), or whose
  message says the model does not exist / is not found (vLLM, Ollama's OpenAI API);
* `http`: never (today's behaviour).

A body with a Content-Encoding of gzip or deflate (a client's `Accept-Encoding` passed on, a
compressing proxy in front of the model server) is judged decoded, no further than the judge
reads (`plain`): a small compressed bomb stays small. Any other coding is never not-ready.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable
from typing import Any

__all__ = ["MAX_BODY", "could_be_not_ready", "is_not_ready", "plain"]

#: larger answers are never read as a not-ready answer (they are streamed as they come)
MAX_BODY = 64 * 1024

_V2_STATUS = frozenset({400, 404, 503})
_V2_PATH = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/(?:infer|generate|generate_stream)$")
# A message says it when it holds "unknown model", or "model" followed later on the same line
# by one of the phrases (what `\bmodel\b.*\b(?:phrases)\b` finds). That regex backtracks over
# the rest of the line from every "model" in it: quadratic, ~10 s of CPU on the event loop for
# a 64 KiB message repeating "model ". `_says` finds the same answers in linear time.
_MODEL = re.compile(r"(?i)\bmodel\b")
_UNKNOWN_MODEL = re.compile(r"(?i)\bunknown model\b")
_V2_PHRASE = re.compile(
    r"(?i)\b(?:not found|not ready|not loaded|not available|unavailable|does not exist|"
    r"no available versions|not at ready state)\b")
_OPENAI_PHRASE = re.compile(r"(?i)\b(?:not found|does not exist)\b")


def could_be_not_ready(protocol: str, status: int, path: str) -> bool:
    """Whether this answer's body must be read before it can be forwarded (cheap: no body)."""
    if protocol == "v2":
        return status in _V2_STATUS and _V2_PATH.search(path) is not None
    if protocol == "openai":
        return status == 404
    return False


def _says(phrase: re.Pattern[str], msg: str) -> bool:
    """Whether a line of `msg` holds the word "model" and, after its first one, `phrase`.

    Linear: each line is searched for "model" once and, from there to the line's end, for
    the phrase once (`.` stops at "\\n" only, so a line ends there). Searching with `endpos`
    at the "\\n" reads `\\b` there as a string's end would: both are non-word."""
    pos, end = 0, len(msg)
    while pos < end:
        model = _MODEL.search(msg, pos)
        if model is None:
            return False
        eol = msg.find("\n", model.end())
        if eol < 0:
            eol = end
        if phrase.search(msg, model.end(), eol) is not None:
            return True
        pos = eol + 1
    return False


#: Content-Encoding -> zlib's wbits (gzip; deflate is zlib-wrapped, or raw from some servers)
_CODINGS = {b"gzip": (31,), b"x-gzip": (31,), b"deflate": (15, -15)}


def plain(body: bytes, raw: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """`body` without its Content-Encoding, at most MAX_BODY + 1 bytes of it (more is never
    a not-ready answer); None when it cannot be decoded (another coding, or corrupt)."""
    coding = b""
    for name, value in raw:
        if len(name) == 16 and name.lower() == b"content-encoding":
            coding = value.strip(b" \t").lower()
    if coding in (b"", b"identity"):
        return body
    for wbits in _CODINGS.get(coding, ()):
        try:
            return zlib.decompressobj(wbits).decompress(body, MAX_BODY + 1)
        except zlib.error:
            continue
    return None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def is_not_ready(protocol: str, status: int, path: str, body: bytes) -> bool:
    """Whether the backend answered "this model is not loaded / not ready" (see above)."""
    if not could_be_not_ready(protocol, status, path) or len(body) > MAX_BODY:
        return False
    doc = _json(body)
    if not isinstance(doc, dict):
        return False
    if protocol == "v2":
        err = doc.get("error")
        return isinstance(err, str) and (_UNKNOWN_MODEL.search(err) is not None
                                         or _says(_V2_PHRASE, err))
    err = doc.get("error")
    if isinstance(err, dict):
        if err.get("code") == "model_not_found":
            return True
        msg = err.get("message")
    else:  # vLLM: {"object": "error", "message": ..., "type": "NotFoundError", "code": 404}
        msg = doc.get("message") if doc.get("object") == "error" else err
    return isinstance(msg, str) and _says(_OPENAI_PHRASE, msg)
