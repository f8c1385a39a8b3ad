"""dataplane/attempts.py's `on_head` and `answered` without sockets: how an answer is judged
once its head is in, and what the plan does with it. Both forwarding paths ask these two, so
the same answer goes the same way whichever path it came back to (CONTRACT §5.6, §3)."""

from __future__ import annotations

import json

import pytest

from gateway.dataplane.attempts import (
    ANSWER,
    ANSWERED,
    HOLD,
    MOVE,
    PASS,
    PLAN,
    Outcome,
    Policy,
    SoFar,
    answered,
    next_attempt,
    on_head,
)

INFER = "/v2/models/iris/infer"
CHAT = "/v1/chat/completions"
NONE = Policy()
RESET = Policy(frozenset({"reset"}), attempts=2)
ALL_5XX = Policy(frozenset({"5xx"}), attempts=2)
ONLY_502 = Policy(frozenset({"502"}), attempts=2)

NOT_READY = {  # protocol, status, path, body: as the model servers say it
    "mlserver": ("v2", 404, INFER, {"error": "Model iris not found"}),
    "triton": ("v2", 400, INFER, {"error": "Request for unknown model: 'iris' is not found"}),
    "kserve": ("v2", 503, INFER, {"error": "Model with name iris is not ready."}),
    "openai": ("openai", 404, CHAT, {"error": {"message": "The model `iris` does not exist.",
                                               "type": "invalid_request_error",
                                               "code": "model_not_found"}}),
}


def _plan(outcome: Outcome, policy: Policy, replayable: bool = True) -> tuple[str, str]:
    nxt = next_attempt(SoFar(), outcome, 1, replayable, policy, lambda: False)
    return nxt.action, nxt.reason


@pytest.mark.parametrize("policy", [NONE, RESET, ALL_5XX, ONLY_502])
@pytest.mark.parametrize("server", list(NOT_READY))
def test_a_not_ready_answer_is_held_then_moved_whatever_the_retry_settings(
        server: str, policy: Policy) -> None:
    """The head decides HOLD before anything else, a 503 with `retry_on: [5xx]` too (a
    not-ready answer is not an ordinary 5xx): it moves with no opt-in and no budget."""
    protocol, status, path, doc = NOT_READY[server]
    assert on_head(protocol, status, path, True, policy) == HOLD
    outcome = answered(protocol, status, path, json.dumps(doc).encode())
    assert outcome == Outcome(ANSWERED, status, True)
    assert _plan(outcome, policy) == (MOVE, "not_ready")  # (the budget says no: not asked)


@pytest.mark.parametrize("status", [200, 201, 204, 206, 301, 304, 399])
@pytest.mark.parametrize("protocol, path", [("v2", INFER), ("openai", CHAT), ("http", INFER)])
def test_below_400_always_passes(protocol: str, path: str, status: int) -> None:
    assert on_head(protocol, status, path, True, ALL_5XX) == PASS


@pytest.mark.parametrize("protocol, status, path", [
    ("v2", 404, "/v2/models/iris"),              # model metadata, not inference
    ("v2", 503, "/v2/models/iris/ready"),
    ("v2", 404, "/v2/health/ready"),
    ("v2", 500, INFER),                          # not a status a not-ready answer has
    ("v2", 401, INFER),
    ("openai", 400, CHAT),                       # openai: only a 404
    ("openai", 503, CHAT),
    ("http", 404, INFER),                        # no protocol: today's behaviour
    ("http", 400, INFER),
    ("http", 503, INFER),
])
def test_answers_that_cannot_say_not_ready_pass_unless_retried(
        protocol: str, status: int, path: str) -> None:
    assert on_head(protocol, status, path, True, NONE) == PASS
    assert on_head(protocol, status, path, True, RESET) == PASS  # (`reset` is no 5xx)
    assert on_head(protocol, status, path, True, ALL_5XX) == (PLAN if status >= 500 else PASS)
    assert on_head(protocol, status, path, True, ONLY_502) == PASS


def test_an_ordinary_5xx_the_route_retries_is_planned_at_its_head() -> None:
    assert on_head("http", 502, "/x", True, ONLY_502) == PLAN
    outcome = answered("http", 502, "/x", None)
    assert outcome == Outcome(ANSWERED, 502, False)
    nxt = next_attempt(SoFar(), outcome, 1, True, ONLY_502, lambda: True)
    assert (nxt.action, nxt.reason) == (MOVE, "retry_502")


def test_a_body_that_cannot_be_sent_again_is_not_held() -> None:
    """A streamed request body cannot go to another version: nothing to hold for; the answer
    is judged as any of its status (a retried 5xx: planned, and the plan answers)."""
    assert on_head("v2", 404, INFER, False, NONE) == PASS
    assert on_head("v2", 503, INFER, False, NONE) == PASS
    assert on_head("v2", 503, INFER, False, ALL_5XX) == PLAN
    assert _plan(answered("v2", 503, INFER, None), ALL_5XX, replayable=False) == (
        ANSWER, "body_not_replayable")


@pytest.mark.parametrize("body", [
    None,                                                        # not held whole (too large)
    b'{"error": "unexpected inference input \'x\' for model \'iris\'"}',  # the client's 400
    b"<html>Service Unavailable</html>",
    json.dumps({"error": "Model iris not found", "pad": "x" * 70_000}).encode(),  # too large
])
def test_a_held_answer_that_does_not_say_not_ready_is_judged_by_its_status(
        body: bytes | None) -> None:
    for status in (400, 404, 503):
        outcome = answered("v2", status, INFER, body)
        assert outcome == Outcome(ANSWERED, status, False)
        assert _plan(outcome, NONE) == (ANSWER, "answered")
        want = (MOVE, f"retry_{status}") if status >= 500 else (ANSWER, "answered")
        assert next_attempt(SoFar(), outcome, 1, True, ALL_5XX, lambda: True)[:2] == want
