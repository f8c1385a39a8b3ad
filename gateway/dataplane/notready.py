"""Protocol-aware outcomes (CONTRACT §5.6): does this answer say "model not loaded / not ready"?

Pure. Model servers answer a request for a model they do not hold in their own words, and
such an answer means the request was not processed: the proxy then moves it to another
version as if it had never been delivered. Recognised, by the route's `protocol`:

* `v2` (Open Inference Protocol: MLServer, Triton, KServe) on an inference path (a POST to
  `.../infer`, `.../generate`, `.../generate_stream`), or a GET or HEAD of a model's
  metadata or readiness (`/v2/models/<m>[/versions/<v>]`, the same and `/ready`: what
  tritonclient's and KServe's `is_model_ready`/`get_model_metadata` ask before inferring; a
  404 to them reached the client and, as an answer below 500, reset the version's failure
  count, so an unloaded canary was never ejected: tests/test_notready_ready.py):
  404, 400 or 503 with the protocol's error body
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
  client's and pass through. A readiness path's 400 or 404 with an empty body is one too:
  the protocol's own "not ready" (its readiness answer is a status, 4xx for false, with no
  body: Triton answers 400 for a model it does not hold or has not loaded, MLServer 400 for
  one loading; KServe answers 503 "Model with name m is not ready."; none answers 200
  `{"ready": false}`), and an answer to HEAD has no body to read;
* `openai` (OpenAI-compatible servers, Ollama) on an inference path (a POST to a path
  ending in `/chat/completions`, `/completions`, `/embeddings`, `/responses`,
  `/moderations`, `/rerank`, `/score`, `/pooling`, `/classify`, `/audio/{speech,
  transcriptions,translations}`, `/images/{generations,edits,variations}`, Ollama's
  `/api/{chat,generate,embed,embeddings}`: with `/v1` or without, as LiteLLM is asked):
  404 whose error has `"code": "model_not_found"` (OpenAI, LiteLLM),
  or whose whole message (case and surrounding blanks aside) is a server's own for the
  requested model (the body's `model` as the version's backend reads it; any name when the
  gateway could not read it): vLLM "The model `x` does not exist.", OpenAI "... does not
  exist or you do not have access to it.", Ollama 'model "x" not found, try pulling it
  first' / "model 'x' not found". Any 404 with "model" and "not found" in it was one, on any
  path: a `GET /v1/files/<id>` whose 404 echoed a crafted id cost one extra backend request
  per version and counted the stable's `not_ready` error (tests/test_notready_openai.py);
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

__all__ = ["MAX_BODY", "could_be_not_ready", "is_not_ready", "plain", "says_unloaded"]

#: larger answers are never read as a not-ready answer (they are streamed as they come)
MAX_BODY = 64 * 1024

_V2_STATUS = frozenset({400, 404, 503})
_V2_PATH = re.compile(
    r"/v2/models/([^/]+)(?:/versions/[^/]+)?/(?:infer|generate|generate_stream)$")
#: a model's metadata or readiness (GET or HEAD): group 2 is "/ready" on the latter
_V2_ASK = re.compile(r"/v2/models/([^/]+)(?:/versions/[^/]+)?(/ready)?$")
#: a readiness answer that is only a status (the protocol's "false")
_V2_BARE = frozenset({400, 404})
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
#: an OpenAI-style inference: what a not-ready answer can be the answer to (a POST)
#: (the path's end: with /v1 or without, as LiteLLM and an OpenAI SDK whose base URL has
#: no /v1 ask, Azure-style `/openai/deployments/<d>/...`, vLLM's /v2/rerank, /pooling)
_OPENAI_PATH = re.compile(
    r"/(?:chat/completions|completions|embeddings|responses|moderations|rerank|score|"
    r"pooling|classify|audio/(?:speech|transcriptions|translations)|"
    r"images/(?:generations|edits|variations)|api/(?:chat|generate|embed|embeddings))$")
#: an OpenAI-compatible server's not-found message, lowercased: (before the model's name,
#: the character that ends the name, what may follow it: the rest of the message, whole)
#: OpenAI's own, which a key without access to the model is answered too
_NO_ACCESS = " does not exist or you do not have access to it."
_OPENAI_SHAPES = (
    ("the model `", "`", (" does not exist", " does not exist.", _NO_ACCESS)),  # vLLM, OpenAI
    ('model "', '"', (" not found", " not found, try pulling it first")),  # Ollama
    ("model '", "'", (" not found", " not found, try pulling it first")),
)


def could_be_not_ready(protocol: str, status: int, path: str,
                       method: bytes = b"POST") -> bool:
    """Whether this answer's body must be read before it can be forwarded (cheap: no body):
    the answer to an inference (a POST to one of the protocol's inference paths), or on
    `v2` to a GET or HEAD of a model's metadata or readiness."""
    if protocol == "v2":
        if status not in _V2_STATUS:
            return False
        if method == b"POST":
            return _V2_PATH.search(path) is not None
        return (method == b"GET" or method == b"HEAD") and _V2_ASK.search(path) is not None
    if method != b"POST":
        return False
    if protocol == "openai":
        return status == 404 and _OPENAI_PATH.search(path) is not None
    return False


def _openai_says(msg: str, model: str | None, access: bool = True) -> bool:
    """Whether `msg` is, whole, an OpenAI-compatible server's not-found message for `model`
    (for any one name when None); `access` False: not one that may be about the client's
    key (`_NO_ACCESS`). Linear: fixed text at both ends, the name compared."""
    text = msg.strip().lower()
    for head, close, tails in _OPENAI_SHAPES:
        if not text.startswith(head):
            continue
        for tail in tails:
            if not access and tail == _NO_ACCESS:
                continue
            end = len(text) - len(close + tail)
            if end < len(head) or not text.endswith(close + tail):
                continue
            name = text[len(head):end]
            if model is not None:
                if name == model.lower():
                    return True
            elif close not in name and "\n" not in name:
                return True
    return False


def _v2_says(msg: str, path: str, method: bytes) -> bool:
    """Whether `msg` is, whole, a v2 server's not-ready message for the path's model."""
    m = (_V2_PATH if method == b"POST" else _V2_ASK).search(path)
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


def is_not_ready(protocol: str, status: int, path: str, body: bytes,
                 method: bytes = b"POST", model: str | None = None,
                 access: bool = True) -> bool:
    """Whether the backend answered "this model is not loaded / not ready" (see above);
    `model`: the model an `openai` request asks its backend for, None when not read.
    `access` False (`says_unloaded`): not an `openai` answer that may be about the
    client's key rather than the backend (a `model_not_found` code alone, OpenAI's "...
    does not exist or you do not have access to it.")."""
    if not could_be_not_ready(protocol, status, path, method) or len(body) > MAX_BODY:
        return False
    if not body.strip() and method != b"POST" and protocol == "v2":
        # a readiness answer's bare "false" (see above); a HEAD's answer never has a body,
        # so a metadata path's (which must name the model) is never one
        ask = _V2_ASK.search(path)
        return status in _V2_BARE and ask is not None and ask.group(2) is not None
    doc = _json(body)
    if not isinstance(doc, dict):
        return False
    if protocol == "v2":
        err = doc.get("error")
        return isinstance(err, str) and _v2_says(err, path, method)
    err = doc.get("error")
    if isinstance(err, dict):
        if access and err.get("code") == "model_not_found":
            return True
        msg = err.get("message")
    else:  # vLLM: {"object": "error", "message": ..., "type": "NotFoundError", "code": 404}
        msg = doc.get("message") if doc.get("object") == "error" else err
    return isinstance(msg, str) and _openai_says(msg, model, access)


def says_unloaded(protocol: str, status: int, path: str, body: bytes, method: bytes,
                  model: str | None) -> bool:
    """`is_not_ready`, of an answer that says the backend lacks the model whoever asks: what
    blames a version for a request that could not move (finish.py). OpenAI answers a key
    whose organisation has no access to a model as it answers a model that does not exist
    (404 `model_not_found`, "... or you do not have access to it."): counted, one client
    with a key of its own ejected a healthy version (tests/test_notready_credentials.py)."""
    return is_not_ready(protocol, status, path, body, method, model, False)
