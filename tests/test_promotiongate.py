"""The shadow promotion gate (domain/promotiongate.py): what it counts, why it refuses, and
which state changes it refuses. Pure: no loop."""

from __future__ import annotations

import gzip

import pytest

from gateway.configfile import parse_config_text
from gateway.domain.comparison import Answer, model_answered
from gateway.domain.promotiongate import gate, gate_counts, promotion_refusal
from gateway.domain.shadowstats import Tally
from gateway.domain.statedoc import RouteOverride, StateDoc
from tests.test_shadowstats import filled

pytestmark = pytest.mark.timeout(10)

ROUTE = """
routes:
  - name: iris
    match: {path_prefix: /x}
    stable: v1
    shadow: {version: v2}
    analysis: {min_shadow_agreement: 0.8, min_shadow_compared: 5}
    versions:
      - {name: v1, url: "http://127.0.0.1:1", weight: 100}
      - {name: v2, url: "http://127.0.0.1:2", weight: 0}
"""


def doc(stable: str | None, weights: dict[str, float] | None) -> StateDoc:
    if weights is None:
        return StateDoc()
    return StateDoc(overrides={"iris": RouteOverride(stable, weights, "a", "r", "t", "weights")})


def test_the_gate_and_what_it_refuses() -> None:
    rc = parse_config_text(ROUTE).routes[0]
    low, high = filled(), Tally("v2", "s")
    for _ in range(5):
        high.outcome("agreed", (), 0.01, 0.01, {})
    assert "no comparison of its answers is known yet" in (gate(rc, None) or "")
    # (the copy the shadow failed, a timeout, counts as compared and not agreed)
    assert "agreed with the primary on 4 of 7 compared requests (57.1%), counting the 1 copy " \
        "the shadow failed (timeout 1) as compared and not agreed" in (gate(rc, low) or "")
    assert gate(rc, high) is None
    few = Tally("v2", "s")
    few.outcome("agreed", (), 0.01, 0.01, {})
    assert "at least 5" in (gate(rc, few) or "")  # 100%, but of too few
    before = StateDoc()
    for after in (doc("v2", {"v1": 0, "v2": 100}), doc("v1", {"v1": 90, "v2": 10}),
                  doc("v2", {"v1": 100, "v2": 0})):
        assert promotion_refusal(rc, before, after, low) is not None
        assert promotion_refusal(rc, before, after, high) is None
    # changes that give the shadow nothing, or that it already had, are not gated
    assert promotion_refusal(rc, before, doc("v1", {"v1": 100, "v2": 0}), low) is None
    assert promotion_refusal(rc, before, StateDoc(), low) is None
    had = doc("v1", {"v1": 90, "v2": 10})
    assert promotion_refusal(rc, had, doc("v1", {"v1": 50, "v2": 50}), low) is None
    ungated = parse_config_text(ROUTE.replace(
        "analysis: {min_shadow_agreement: 0.8, min_shadow_compared: 5}", "")).routes[0]
    assert promotion_refusal(ungated, before, doc("v2", {"v2": 100}), low) is None


def test_the_gate_counts_the_shadows_failures_only() -> None:
    """A copy the shadow failed counts against it; one a kill cut, one our own pool
    refused before sending it (overflow), or one our own code failed (error) does not."""
    rc = parse_config_text(ROUTE).routes[0]
    t = Tally("v2", "s")
    for _ in range(8):
        t.outcome("agreed", (), 0.01, 0.01, {})
    for kind in ("killed", "overflow", "error", "killed"):
        t.failed(kind)
    assert gate_counts(t) == (8, 8, {}) and gate(rc, t) is None
    for kind in ("timeout", "reset"):
        t.failed(kind)
    assert gate_counts(t) == (10, 8, {"reset": 1, "timeout": 1})
    assert gate(rc, t) is None  # 80%: at the gate
    t.failed("malformed")
    assert "counting the 3 copies the shadow failed (malformed 1, reset 1, timeout 1)" in \
        (gate(rc, t) or "")
    few = Tally("v2", "s")
    few.outcome("agreed", (), 0.01, 0.01, {})
    for _ in range(4):
        few.failed("connect")
    assert "1 of 5 compared requests (20.0%)" in (gate(rc, few) or "")


@pytest.mark.parametrize("need", [0.07, 0.14, 0.28, 0.55, 0.56, 0.57, 0.95, 0.99])
def test_an_agreement_exactly_at_the_bar_opens_the_gate(need: float) -> None:
    """55 agreed of 100 is 55 %: min_shadow_agreement 0.55 is met. The bar was compared in
    floating point (0.55 * 100 is 55.00000000000001), so the gate stayed shut, saying
    '55 of 100 compared requests (55.0%) ... needs 55.0%'."""
    rc = parse_config_text(ROUTE.replace("min_shadow_agreement: 0.8",
                                         f"min_shadow_agreement: {need}")).routes[0]
    for n in (100, 1000):
        agreed = round(need * n)
        t = Tally("v2", "s")
        for i in range(n):
            t.outcome("agreed" if i < agreed else "disagreed", (), 0.01, 0.01, {})
        assert gate(rc, t) is None, (n, gate(rc, t))
        t.ok_outcomes["agreed"] -= 1  # (the gate's: of requests the primary answered 2xx)
        t.ok_outcomes["disagreed"] += 1
        assert gate(rc, t) is not None  # one fewer is below it


def test_the_refusal_tells_the_agreement_from_the_bar() -> None:
    """With min_shadow_agreement 0.9999 and 99,989 of 100,000 agreed, the 409 said 'agreed
    ... (100.0%) ...; needs 100.0%': numbers that do not say why it is refused. Shares are
    shown with as many decimals as tell them apart."""
    rc = parse_config_text(ROUTE.replace("min_shadow_agreement: 0.8",
                                         "min_shadow_agreement: 0.9999")).routes[0]
    t = Tally("v2", "s")
    t.ok_outcomes = {"agreed": 99_989, "disagreed": 11}
    why = gate(rc, t) or ""
    assert "on 99989 of 100000 compared requests (99.989%)" in why, why
    assert "needs 99.990% over at least 5" in why, why
    t.ok_outcomes = {"agreed": 4, "disagreed": 3}  # (apart at one decimal: as before)
    why = gate(rc, t) or ""
    assert "(57.1%)" in why and "needs 100.0%" in why, why


def test_the_gate_counts_requests_the_primary_answered_2xx_only() -> None:
    """Both sides' 401 (or 422, or 503) agree and say nothing of the model: they met
    `min_shadow_compared` with no model answer compared. The gate counts the comparisons,
    and the copies the shadow failed, of requests the primary answered 2xx only, and its
    refusal says how many others there were; the report's own counts keep them all."""
    rc = parse_config_text(ROUTE).routes[0]
    t = Tally("v2", "s")
    for _ in range(10):
        t.outcome("agreed", (), 0.01, 0.01, {}, primary_ok=False)
        t.failed("timeout", primary_ok=False)
    assert gate_counts(t) == (0, 0, {})
    why = gate(rc, t) or ""
    assert "no comparison of its answers is known yet" in why and "counting only requests " \
        "the primary answered 2xx; 10 compared requests the primary answered with another " \
        "status (a 4xx, a 5xx) or an error body do not count" in why, why
    for _ in range(5):
        t.outcome("agreed", (), 0.01, 0.01, {}, primary_ok=True)
    assert gate_counts(t) == (5, 5, {}) and gate(rc, t) is None
    assert Tally.from_json(t.to_json()).ok_outcomes == {"agreed": 5}
    assert gate_counts(Tally.from_json(t.to_json())) == (5, 5, {})


@pytest.mark.parametrize(("answer", "protocol", "counted"), [
    (Answer(200, b'{"outputs": []}'), "v2", True),
    (Answer(200, b'{"error": "model not loaded"}'), "v2", False),
    (Answer(200, b' {"error": {"code": "model_not_found"}}'), "openai", False),
    (Answer(200, b'{"error": "not json for this protocol"}'), "http", True),
    (Answer(200, b'{"choices": [{"message": {"content": "\\"error\\""}}]}'), "openai", True),
    (Answer(200, b'{"error": '), "v2", True),  # not JSON: compared as the bytes it is
    (Answer(404, b'{"outputs": []}'), "v2", False),
    # a success body that carries an empty error field (OpenAI's Responses API answers
    # `"error": null` in every response object) is a model's answer, as clients read it
    # (compare_chat's rule for a stream's events too)
    (Answer(200, b'{"id": "resp_1", "status": "completed", "error": null, '
                 b'"output": [{"type": "message"}]}'), "openai", True),
    (Answer(200, b'{"outputs": [], "error": ""}'), "v2", True),
    (Answer(200, b'{"error": {}}'), "openai", True),
    # gzip (some servers compress every answer): read as the client reads it
    (Answer(200, gzip.compress(b'{"error": "model not loaded"}'), encoding="gzip"), "v2",
     False),
    (Answer(200, gzip.compress(b'{"outputs": []}'), encoding="gzip"), "v2", True),
    (Answer(200, b"not gzip", encoding="gzip"), "v2", True),
])
def test_a_200_error_body_is_no_model_answer(answer: Answer, protocol: str,
                                             counted: bool) -> None:
    assert model_answered(answer, protocol) is counted
