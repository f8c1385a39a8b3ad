"""Shadow answer comparison: does the shadow's answer agree with the one the client got?

Owns `compare` (status first; two identical bodies agree at once; then the route's kind:
`v2_tensors`, `openai_chat` or `json`, in their own modules) and `judge`, the verdict
with the noise floor (Diffy's method): a difference at a path where the primary also
disagrees with itself is not counted against the shadow. Outcomes: `agreed`, `noise`
(every difference explained by noise: counted as agreement), `disagreed`, and
`uncomparable` (the primary's answer could not be read: not counted). Pure.
"""

from __future__ import annotations

from collections.abc import Container

from gateway.config_shadow import CompareConfig
from gateway.domain.compare_chat import compare_chat
from gateway.domain.compare_json import compare_json
from gateway.domain.compare_tensors import compare_tensors
from gateway.domain.comparison import Answer, Comparison, Difference

__all__ = ["AGREED", "ANSWER_KINDS", "DISAGREED", "NOISE", "OUTCOMES", "UNCOMPARABLE", "compare",
           "excuses_answer", "judge"]

AGREED, NOISE, DISAGREED, UNCOMPARABLE = "agreed", "noise", "disagreed", "uncomparable"
OUTCOMES = (AGREED, NOISE, DISAGREED, UNCOMPARABLE)

#: kinds of difference that are the model's answer itself, not a field beside it: a chat
#: answer's text, tool calls or JSON, a tensor's values, a body that is not JSON (or not
#: parsable). A comparison that agreed only by excusing one of these as noise (the primary
#: samples its text: it differs from itself in nearly every pair) compared no answer: the
#: promotion gate does not count it as agreement (promotiongate.py). A JSON field (an id,
#: a timestamp) excused as noise is field-level (Diffy): the rest was compared exactly;
#: under `compare: json` a field that is the answer (`answer_paths`, or by default a long
#: text) differs as `answer` (compare_json.py).
ANSWER_KINDS = frozenset({"text", "tool_calls", "json", "values", "body", "unparsable",
                          "answer"})


def compare(cfg: CompareConfig, request: bytes, primary: Answer, shadow: Answer) -> Comparison:
    """How `shadow` differs from `primary` (the answer the client got)."""
    if primary.status != shadow.status:
        return Comparison(True, (Difference("status", "status"),),
                          {"primary_status": primary.status, "shadow_status": shadow.status})
    if not 200 <= primary.status < 300:
        return Comparison(True, (), {"status": primary.status})  # the same refusal or error
    if primary.body == shadow.body:
        return Comparison(True, (), {"identical": True})
    try:
        if cfg.v2_tensors is not None:
            return compare_tensors(cfg.v2_tensors, primary.body, shadow.body)
        if cfg.openai_chat is not None:
            return compare_chat(cfg.openai_chat, request, primary.body, shadow.body,
                                primary.content_type, shadow.content_type)
        assert cfg.json_ is not None
        return compare_json(cfg.json_, primary.body, shadow.body)
    except RecursionError:
        return Comparison(False, (), {"why": "an answer is nested too deeply to compare"})


def judge(c: Comparison, noise: Comparison | None = None,
          noisy: Container[str] = frozenset()) -> tuple[str, tuple[Difference, ...]]:
    """The outcome and the differences that count. `noise`: this request's primary
    compared with a second answer of the primary; `noisy`: paths known to be noise."""
    if not c.comparable:
        return UNCOMPARABLE, ()
    if not c.differences:
        return AGREED, ()
    own = {d.path for d in noise.differences} if noise is not None and noise.comparable else ()
    left = tuple(d for d in c.differences if d.path not in own and d.path not in noisy)
    return (DISAGREED, left) if left else (NOISE, ())


def excuses_answer(c: Comparison, outcome: str) -> bool:
    """Whether a `noise` outcome excused the answer itself (`ANSWER_KINDS`)."""
    return outcome == NOISE and any(d.kind in ANSWER_KINDS for d in c.differences)
