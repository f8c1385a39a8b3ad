"""The retry and failover plan of one request: from how the attempts so far went, the next
attempt and why (CONTRACT §3 and §5.6).

Pure: no I/O, no clock; the retry budget is asked through a callable, and only when a
delivered request would be sent again. The proxy turns each attempt's result into an
`Outcome`, asks `next_attempt`, and does what it says:

* `ANSWER` — stop: hand the client this answer (or this error, or the route's fallback);
* `FRESH`  — the same version again on a new connection: a pooled keep-alive connection
  the backend had already closed took the request without a byte of answer (once), for a
  request safe to send twice only (an idempotent method, or an `Idempotency-Key`; or one
  `retry_on: [reset]` would retry, when there is no other version to send it to): the
  same close is what a backend that crashed while it processed the request sends, and a
  POST sent again would be processed twice (a request that crashes its server, twice);
* `MOVE`   — the next version in the route's failover order.

The rules: a request that never reached a backend (connection refused, connect timeout, our
own queue full) moves to the next version that can serve, as does one answered "model not
loaded / not ready" by a route that declares its backend protocol (`v2`, `openai`): such an
answer means it was not processed. Neither needs an opt-in nor spends the retry budget. A
delivered request (a reset before the answer, a 5xx) moves only when the route opts in with
`retry`, its body can be sent again, fewer than `attempts` tries were made, and the budget
allows; an answer cut after its head (its backend processed the request) only when the
request is safe to send twice as well. Timeouts and malformed answers are never retried.
All moves need a version left.

Both forwarding paths (the fast path's upstream callbacks, the slow path's coroutine) judge
an answer by the same two steps, before a byte of it goes to the client: `on_head` once its
head is in (a status below 400 is always `PASS`, and the fast path does not even ask), then,
for an answer held whole or one the route may retry, `answered` gives the plan its outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from gateway.dataplane.notready import could_be_not_ready, is_not_ready, plain

__all__ = ["ANSWER", "FRESH", "HOLD", "MOVE", "PASS", "PLAN", "Next", "Outcome", "Policy",
           "SoFar", "answered", "next_attempt", "on_head", "resend_safe"]

ANSWER, FRESH, MOVE = "answer", "fresh", "move"

# Outcome kinds
UNDELIVERED = "undelivered"  # nothing reached the backend (connect error or timeout)
OVERFLOW = "overflow"        # our queue for that backend was full / timed out
STALE = "stale"              # a reused connection closed before any answer byte
RESET = "reset"              # closed or reset after the request was sent, before an answer
CUT = "cut"                  # closed or reset after the answer's head: it was processed
TIMEOUT = "timeout"          # delivered, then no answer in time
MALFORMED = "malformed"      # the answer could not be parsed
ANSWERED = "answered"        # an answer (see status, not_ready)
KILLED = "killed"            # cut on purpose by a kill


#: RFC 9110 9.2.2: a request with one of these methods may be processed twice
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def resend_safe(method: bytes, fields: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request may be sent again after a close that may have followed its
    processing: an idempotent method, or a client's `Idempotency-Key` (as Go's http
    client reads it, also `X-Idempotency-Key`) among its raw `fields`."""
    return method in IDEMPOTENT or any(
        n.lower() in (b"idempotency-key", b"x-idempotency-key") for n, _ in fields)


class Outcome(NamedTuple):
    kind: str
    status: int = 0
    not_ready: bool = False  # a protocol-aware "model not loaded / not ready" answer


# What to do with an answer once its head is in (`on_head`)
PASS = 0  # forward it: nothing in it can change where the request goes
HOLD = 1  # it may say "model not loaded / not ready": hold its (small) body whole, then judge
PLAN = 2  # a 5xx the route retries: ask the plan now, before anything is forwarded


class Policy(NamedTuple):
    """A route's retry settings (None-free: a route without `retry` has attempts 1)."""

    retry_on: frozenset[str] = frozenset()
    attempts: int = 1

    def retries_status(self, status: int) -> bool:
        on = self.retry_on
        return str(status) in on or ("5xx" in on and 500 <= status < 600)


class SoFar(NamedTuple):
    moves: int = 0    # versions moved to (the index of the next one in the failover order)
    retries: int = 0  # times a delivered request was sent again
    fresh: int = 0    # times the same version was tried again on a new connection


def on_head(protocol: str, status: int, path: str, replayable: bool, policy: Policy,
            method: bytes = b"POST") -> int:
    """How an answer is handled once its head is in: `PASS`, `HOLD` or `PLAN` (above). A
    not-ready answer is only worth holding when the request could go elsewhere (its body can
    be sent again); one that is not (too large, or another error) is then judged as any answer
    of its status."""
    if status < 400:
        return PASS
    if replayable and could_be_not_ready(protocol, status, path, method):
        return HOLD
    if status >= 500 and policy.retries_status(status):
        return PLAN
    return PASS


def answered(protocol: str, status: int, path: str, body: bytes | None,
             raw: Iterable[tuple[bytes, bytes]] = (), method: bytes = b"POST",
             model: str | None = None) -> Outcome:
    """The outcome of an answer `on_head` did not pass: `body` is the whole body of one held
    (None when it was not held, or did not arrive whole within the limit); `raw`, the
    answer's fields (its Content-Encoding); `method`, the request's; `model`, the model it
    asks its backend for (`is_not_ready`)."""
    if body is not None:
        body = plain(body, raw)
    return Outcome(ANSWERED, status,
                   body is not None and is_not_ready(protocol, status, path, body, method,
                                                    model))


class Next(NamedTuple):
    action: str
    reason: str
    so_far: SoFar


def next_attempt(so_far: SoFar, outcome: Outcome, alternatives: int, replayable: bool,
                 policy: Policy, budget: Callable[[], bool],
                 resend_safe: Callable[[], bool] = lambda: True) -> Next:
    """What to do after an attempt ended with `outcome`. `alternatives` is the length of the
    route's failover order for the first version tried; `replayable`, whether the whole body
    is in memory (a streamed body cannot be sent twice); `resend_safe`, whether the request
    may be processed twice (asked only of a stale connection's close, and of an answer cut
    after its head: a backend that answered has processed the request)."""
    kind = outcome.kind
    if kind == KILLED:
        return Next(ANSWER, "killed", so_far)
    if kind == ANSWERED and not outcome.not_ready:
        if outcome.status < 500 or not policy.retries_status(outcome.status):
            return Next(ANSWER, "answered", so_far)
        return _retry(so_far, f"retry_{outcome.status}", alternatives, replayable, policy, budget)
    if kind == STALE and replayable and so_far.fresh == 0:
        if resend_safe():
            return Next(FRESH, "stale_connection", so_far._replace(fresh=1))
        if "reset" in policy.retry_on:  # the route's consent: a retry, on another version;
            nxt = _retry(so_far, "retry_reset", alternatives, replayable, policy, budget)
            if nxt.reason != "no_other_version":  # with none, this one on a new connection
                return nxt
            if not budget():  # (a retry: within the route's budget, counted as one)
                return Next(ANSWER, "budget_spent", so_far)
            return Next(FRESH, "stale_connection",
                        so_far._replace(fresh=1, retries=so_far.retries + 1))
    if kind in (UNDELIVERED, OVERFLOW) or outcome.not_ready:
        if not replayable and kind == ANSWERED:
            return Next(ANSWER, "body_not_replayable", so_far)
        if so_far.moves >= alternatives:
            return Next(ANSWER, "no_other_version", so_far)
        why = "not_ready" if outcome.not_ready else kind
        return Next(MOVE, why, so_far._replace(moves=so_far.moves + 1, fresh=0))
    if kind in (RESET, STALE) and "reset" in policy.retry_on:
        return _retry(so_far, "retry_reset", alternatives, replayable, policy, budget)
    if kind == CUT and "reset" in policy.retry_on and resend_safe():
        # its head said the backend processed it: sent again only if that is safe
        return _retry(so_far, "retry_reset", alternatives, replayable, policy, budget)
    return Next(ANSWER, "not_retried", so_far)


def _retry(so_far: SoFar, reason: str, alternatives: int, replayable: bool, policy: Policy,
           budget: Callable[[], bool]) -> Next:
    """A delivered request sent again: only with everything the opt-in asks for."""
    if not replayable:
        return Next(ANSWER, "body_not_replayable", so_far)
    if so_far.retries + 1 >= policy.attempts:
        return Next(ANSWER, "attempts_spent", so_far)
    if so_far.moves >= alternatives:
        return Next(ANSWER, "no_other_version", so_far)
    if not budget():
        return Next(ANSWER, "budget_spent", so_far)
    return Next(MOVE, reason, so_far._replace(moves=so_far.moves + 1,
                                              retries=so_far.retries + 1, fresh=0))
