"""One shadow copy's verdict: compare, judge with the noise floor, describe a disagreement.

Owns `verdict()` (what the mirror runs for each answered copy, inline or in a worker
thread), the stored form of a disagreement's bodies (`body_record`: JSON redacted by path
and cut at `max_body`; text when not JSON, or nothing when redaction is configured) and
`spec_of`/`spec_for`, the digest of the settings counts depend on. Pure: no I/O; the time of a record
is read from the clock only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from gateway.config_routes import RouteConfig
from gateway.config_shadow import CompareConfig, DisagreementsConfig, ShadowConfig
from gateway.domain.audit import utc_now
from gateway.domain.compare import DISAGREED, compare, excuses_answer, judge
from gateway.domain.comparison import (
    Answer,
    Comparison,
    Difference,
    compile_paths,
    decoded,
    redact,
)

__all__ = ["MAX_DEPTH", "PARSE_LIMIT", "Verdict", "answer_record", "body_record", "spec_for",
           "spec_of", "verdict"]

#: bodies larger than this (and than 4 x disagreements.max_body) are not parsed for a record
PARSE_LIMIT = 256 * 1024


def spec_of(sh: ShadowConfig, protocol: str, target: str = "") -> str:
    """A digest of the settings counts depend on (a reload that changes them starts over);
    `target`: what the shadow version is (`spec_for`)."""
    text = f"{protocol}|{sh.version}|{sh.compare_for(protocol).model_dump_json()}|" \
           f"{sh.noise.model_dump_json() if sh.noise else ''}|{target}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spec_for(rc: RouteConfig) -> str:
    """`spec_of` the route's shadow, with what its version is: its URL, model and artifact,
    and the stable it is compared with (a reload redeploying v3 at another URL, or
    promoting another stable, compares something else: its counts start over too)."""
    sh = rc.shadow
    assert sh is not None
    v = next((v for v in rc.versions if v.name == sh.version), None)
    target = "" if v is None else json.dumps([v.url, v.model, v.artifact, rc.stable])
    return spec_of(sh, rc.protocol, target)


class Verdict(NamedTuple):
    result: Comparison  # the shadow's answer against the client's
    noise: Comparison | None  # the primary's second answer against the client's
    outcome: str
    left: tuple[Difference, ...]  # the differences that count (after the noise floor)
    record: dict[str, Any] | None  # a disagreement, as stored
    #: agreed only by excusing the answer itself as noise (compare.excuses_answer)
    excused_answer: bool = False


def verdict(sh: ShadowConfig, protocol: str, request: bytes, primary: Answer, answer: Answer,
            again: Answer | None, noisy: frozenset[str]) -> Verdict:
    """`again`: the primary's second answer (the noise floor), if one was asked for;
    `noisy`: paths known to be noise from earlier pairs."""
    if again is not None and again.status != primary.status:
        # not noise: the primary was refused or failed one of the two times (a 429, a 503),
        # which says nothing of how its answers vary; such a pair would excuse the shadow's
        # own status difference. Discarded: judged, and counted, as without a pair
        again = None
    cmp = sh.compare_for(protocol)
    # answers compressed by their backends (the client's Accept-Encoding goes to both)
    # are compared, and kept, as what they say
    limit = sh.max_answer_bytes
    p = decoded(primary, limit)
    s = decoded(answer, limit)
    a = decoded(again, limit) if again is not None else None
    result = _compare(cmp, request, p, s, primary, answer)
    own = _compare(cmp, request, p, a, primary, again) if again is not None else None
    primary, answer = p or primary, s or answer
    outcome, left = judge(result, own, noisy)
    record = None
    if outcome == DISAGREED and sh.disagreements.keep:
        d = sh.disagreements
        record = {"time": utc_now(), "request": body_record(request, d),
                  "primary": answer_record(primary, d), "shadow": answer_record(answer, d),
                  "differences": [{"kind": x.kind, "path": x.path} for x in left[:16]],
                  "detail": {k: v for k, v in result.detail.items()
                             if isinstance(v, bool | int | float | str)}}
    return Verdict(result, own, outcome, left, record, excuses_answer(result, outcome))


def _compare(cmp: CompareConfig, request: bytes, p: Answer | None, s: Answer | None,
             raw_p: Answer, raw_s: Answer) -> Comparison:
    """`compare`, of answers decoded from their Content-Encoding (None: they could not be,
    within max_answer_bytes)."""
    if (p is not None and s is not None) or raw_p.status != raw_s.status \
            or not 200 <= raw_p.status < 300 or raw_p.body == raw_s.body:
        return compare(cmp, request, p or raw_p, s or raw_s)
    if p is None:
        return Comparison(False, (), {"why": "the primary's answer: its Content-Encoding "
                                             "does not decode within max_answer_bytes"})
    return Comparison(True, (Difference("unparsable", "$"),))


#: a body nested deeper than this is kept as text (or not at all, with redaction): the
#: records are encoded again, a few levels deeper each time (the blob published to the
#: store, the admin API's answer), and any client chooses the request's body
MAX_DEPTH = 64


def _deeper_than(doc: Any, limit: int) -> bool:
    """Whether `doc` nests lists and objects more than `limit` levels (no recursion)."""
    level: list[Any] = [doc]
    for _ in range(limit + 1):
        inner: list[Any] = []
        for x in level:
            if isinstance(x, dict):
                inner.extend(x.values())
            elif isinstance(x, list):
                inner.extend(x)
        if not inner:
            return False
        level = inner
    return True


def body_record(body: bytes, cfg: DisagreementsConfig) -> Any:
    """What a stored disagreement keeps of a body: JSON (redacted) when it fits in
    `max_body`, else text cut to `max_body`. A body that is not JSON is not kept when
    redaction is configured (it cannot be redacted)."""
    try:
        if len(body) > max(PARSE_LIMIT, 4 * cfg.max_body):
            raise ValueError("too large to parse for a record")  # (a record is cut anyway)
        doc = json.loads(body)
        if _deeper_than(doc, MAX_DEPTH):
            raise ValueError("nested too deeply to keep")
    except (ValueError, RecursionError):
        if cfg.redact:
            return (f"[{len(body)} bytes, not JSON (or too large to redact): not kept, since "
                    "redaction is configured]")
        text = body[:cfg.max_body].decode("utf-8", "replace")
        return text + (f"…[cut {len(body) - cfg.max_body} bytes]" if len(body) > cfg.max_body
                       else "")
    try:
        doc = redact(doc, compile_paths(tuple(cfg.redact)))
        text = json.dumps(doc, separators=(",", ":"))
    except RecursionError:
        return f"[{len(body)} bytes of JSON nested too deeply to keep]"
    if len(text) <= cfg.max_body:
        return doc
    return text[:cfg.max_body] + f"…[cut {len(text) - cfg.max_body} bytes]"


def answer_record(a: Answer, cfg: DisagreementsConfig) -> dict[str, Any]:
    return {"status": a.status, "body": body_record(a.body, cfg)}
