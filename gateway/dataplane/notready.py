"""Protocol-aware outcomes (CONTRACT §5.6): does this answer say "model not loaded / not ready"?

Pure. Model servers answer a request for a model they do not hold in their own words, and
such an answer means the request was not processed: the proxy then moves it to another
version as if it had never been delivered. Recognised, by the route's `protocol`:

* `v2` (Open Inference Protocol: MLServer, Triton, KServe) on an inference path (`.../infer`,
  `.../generate`, `.../generate_stream`): 404, 400 or 503 with the protocol's error body
  `{"error": "<message>"}` whose whole message (case and surrounding blanks aside) is one a
  model server says of the model the path names (as sent or percent-decoded): MLServer
  "Model iris not found", "Model iris [with version 2] is not ready yet."; Triton "Request for
  unknown model: 'iris' [version 2] is not found / has no available versions / is not at
  ready state"; KServe "Model with name iris does not exist.", "Model with name iris is not
  ready. <detail>". Only the shape and the model are compared, never words found somewhere in
  the text: a server's answer to a client's mistake echoes the client's text (Triton's
  "unexpected inference input '<name>' for model 'iris'"), and an input named "model not
  ready" sent the request to every version and counted the stable's `not_ready` error
  (tests/test_notready_shapes.py). Other 400s (a bad tensor, a missing input) are the
  client's and pass through;
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
from urllib.parse import unquote

__all__ = ["MAX_BODY", "could_be_not_ready", "is_not_ready", "plain"]

#: larger answers are never read as a not-ready answer (they are streamed as they come)
MAX_BODY = 64 * 1024

_V2_STATUS = frozenset({400, 404, 503})
_V2_PATH = re.compile(
    r"/v2/models/([^/]+)(?:/versions/[^/]+)?/(?:infer|generate|generate_stream)$")
#: a v2 server's not-ready message, lowercased: what comes before the model's name, and what
#: must make up the rest of it (linear: one `\S+` run at most before fixed text, or `.*`)
_V2_SHAPES = (
    ("request for unknown model: '", re.compile(  # Triton
        r"' (?:version \S+ )?(?:is not found|is not ready|is not at ready state|"
        r"has no available versions)")),
    ("model with name ", re.compile(  # KServe (a not-ready message may add a detail)
        r" (?:does not exist\.?|is not ready\.?(?: .*)?)", re.DOTALL)),
    ("model ", re.compile(r" (?:with version \S+ )?(?:not found|is not ready(?: yet)?)\.?")),
)
# An OpenAI-style message says it when it holds "model" followed later on the same line by
# one of the phrases (what `\bmodel\b.*\b(?:phrases)\b` finds). That regex backtracks over
# the rest of the line from every "model" in it: quadratic, ~10 s of CPU on the event loop for
# a 64 KiB message repeating "model ". `_says` finds the same answers in linear time.
_MODEL = re.compile(r"(?i)\bmodel\b")
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


def _v2_says(msg: str, path: str) -> bool:
    """Whether `msg` is, whole, a v2 server's not-ready message for the path's model."""
    m = _V2_PATH.search(path)
    if m is None:
        return False
    text = msg.strip().lower()
    name = m.group(1).lower()
    for named in {name, unquote(name)}:
        for before, rest in _V2_SHAPES:
            head = before + named
            if text.startswith(head) and rest.fullmatch(text, len(head)) is not None:
                return True
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
        return isinstance(err, str) and _v2_says(err, path)
    err = doc.get("error")
    if isinstance(err, dict):
        if err.get("code") == "model_not_found":
            return True
        msg = err.get("message")
    else:  # vLLM: {"object": "error", "message": ..., "type": "NotFoundError", "code": 404}
        msg = doc.get("message") if doc.get("object") == "error" else err
    return isinstance(msg, str) and _says(_OPENAI_PHRASE, msg)
