"""dataplane/attempts.py without sockets: the next attempt, and why, from the outcome so far."""

from __future__ import annotations

import pytest

from gateway.dataplane.attempts import (
    ANSWER,
    ANSWERED,
    FRESH,
    KILLED,
    MALFORMED,
    MOVE,
    OVERFLOW,
    RESET,
    STALE,
    TIMEOUT,
    UNDELIVERED,
    Outcome,
    Policy,
    SoFar,
    next_attempt,
    resend_safe,
)

NONE = Policy()
OPTED = Policy(frozenset({"reset", "503"}), attempts=3)


def yes() -> bool:
    return True


def never() -> bool:
    raise AssertionError("the budget must not be asked")


def run(outcomes: list[Outcome], alternatives: int, policy: Policy = NONE,
        replayable: bool = True, budget=yes) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Feed outcomes one by one; the (action, reason) after each, until an ANSWER."""
    so_far, out = SoFar(), []
    for o in outcomes:
        nxt = next_attempt(so_far, o, alternatives, replayable, policy, budget)
        out.append((nxt.action, nxt.reason))
        if nxt.action == ANSWER:
            break
        so_far = nxt.so_far
    return out


def test_an_answer_is_answered_without_asking_anything() -> None:
    for status in (200, 404, 500, 503):
        assert run([Outcome(ANSWERED, status)], 2, budget=never) == [(ANSWER, "answered")]


def test_undelivered_moves_through_every_version_then_stops() -> None:
    got = run([Outcome(UNDELIVERED), Outcome(OVERFLOW), Outcome(UNDELIVERED)], 2, budget=never)
    assert got == [(MOVE, UNDELIVERED), (MOVE, OVERFLOW), (ANSWER, "no_other_version")]
    # no opt-in, no budget, and even a streamed body: nothing was sent
    assert run([Outcome(UNDELIVERED)], 1, replayable=False, budget=never) == [(MOVE, UNDELIVERED)]


def test_not_ready_moves_like_undelivered_without_opt_in_or_budget() -> None:
    got = run([Outcome(ANSWERED, 404, not_ready=True), Outcome(ANSWERED, 200)], 1, budget=never)
    assert got == [(MOVE, "not_ready"), (ANSWER, "answered")]
    # the last version also not ready: its own answer goes back
    assert run([Outcome(ANSWERED, 404, True)] * 2, 1)[-1] == (ANSWER, "no_other_version")
    # a body that streamed cannot be sent again
    assert run([Outcome(ANSWERED, 404, True)], 1, replayable=False) == [
        (ANSWER, "body_not_replayable")]


def test_a_stale_connection_is_tried_fresh_only_for_a_request_safe_to_send_twice() -> None:
    unsafe = next_attempt(SoFar(), Outcome(STALE), 2, True, NONE, never, lambda: False)
    assert (unsafe.action, unsafe.reason) == (ANSWER, "not_retried")
    assert next_attempt(SoFar(), Outcome(STALE), 2, True, OPTED, yes,
                        lambda: False).action == MOVE  # (the opt-in: a retry like a reset)
    assert resend_safe(b"GET", []) and resend_safe(b"PUT", []) and resend_safe(b"DELETE", [])
    assert not resend_safe(b"POST", []) and not resend_safe(b"PATCH", [(b"X-A", b"1")])
    assert resend_safe(b"POST", [(b"Idempotency-Key", b"k")])
    assert resend_safe(b"POST", [(b"x-idempotency-key", b"k")])


def test_a_stale_pooled_connection_is_tried_again_fresh_once() -> None:
    assert run([Outcome(STALE), Outcome(ANSWERED, 200)], 0) == [
        (FRESH, "stale_connection"), (ANSWER, "answered")]
    # twice: then it is a reset like any other (not retried without opt-in)
    assert run([Outcome(STALE), Outcome(STALE)], 1) == [
        (FRESH, "stale_connection"), (ANSWER, "not_retried")]
    assert run([Outcome(STALE)], 1, replayable=False) == [(ANSWER, "not_retried")]
    # after a move, the next version may be tried fresh once too
    nxt = next_attempt(SoFar(), Outcome(STALE), 2, True, NONE, yes)
    nxt = next_attempt(nxt.so_far, Outcome(UNDELIVERED), 2, True, NONE, yes)
    assert next_attempt(nxt.so_far, Outcome(STALE), 2, True, NONE, yes).action == FRESH


@pytest.mark.parametrize("outcome", [Outcome(RESET), Outcome(ANSWERED, 503)])
def test_delivered_requests_move_only_with_everything_the_opt_in_asks(outcome: Outcome) -> None:
    reason = "retry_reset" if outcome.kind == RESET else "retry_503"
    assert run([outcome], 2, NONE, budget=never) == [
        (ANSWER, "not_retried" if outcome.kind == RESET else "answered")]
    assert run([outcome, outcome, outcome], 5, OPTED) == [
        (MOVE, reason), (MOVE, reason), (ANSWER, "attempts_spent")]
    assert run([outcome], 0, OPTED) == [(ANSWER, "no_other_version")]
    assert run([outcome], 2, OPTED, replayable=False, budget=never) == [
        (ANSWER, "body_not_replayable")]
    assert run([outcome], 2, OPTED, budget=lambda: False) == [(ANSWER, "budget_spent")]


def test_5xx_other_than_opted_and_timeouts_and_malformed_are_never_retried() -> None:
    assert run([Outcome(ANSWERED, 500)], 2, OPTED, budget=never) == [(ANSWER, "answered")]
    assert run([Outcome(ANSWERED, 502)], 2, Policy(frozenset({"5xx"}), 2)) == [
        (MOVE, "retry_502")]
    for kind in (TIMEOUT, MALFORMED):
        assert run([Outcome(kind)], 2, OPTED, budget=never) == [(ANSWER, "not_retried")]
    assert run([Outcome(KILLED)], 2, OPTED, budget=never) == [(ANSWER, "killed")]


def test_retries_and_moves_share_the_versions_left() -> None:
    got = run([Outcome(UNDELIVERED), Outcome(RESET), Outcome(UNDELIVERED)], 2, OPTED)
    assert got == [(MOVE, UNDELIVERED), (MOVE, "retry_reset"), (ANSWER, "no_other_version")]


def test_a_stale_post_sent_fresh_by_the_opt_in_asks_the_retry_budget() -> None:
    """With one version, `retry_on: [reset]` sends a stale connection's POST again on a new
    connection (6b0bc94): a retry the route consented to, so within its retry budget like
    any other (a backend crashing on every POST had each sent twice, the budget unasked)."""
    post = lambda: False  # noqa: E731 - not safe to send twice
    spent = next_attempt(SoFar(), Outcome(STALE), 0, True, OPTED, lambda: False, post)
    assert (spent.action, spent.reason) == (ANSWER, "budget_spent")
    ok = next_attempt(SoFar(), Outcome(STALE), 0, True, OPTED, yes, post)
    assert ok.action == FRESH and ok.so_far.retries == 1
    # a request safe to send twice is tried fresh without asking (as before)
    assert next_attempt(SoFar(), Outcome(STALE), 0, True, OPTED, never, yes).action == FRESH
