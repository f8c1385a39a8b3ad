"""The shadow promotion gate: a shadow gets traffic only once it agreed enough.

Owns the rule of `analysis.min_shadow_agreement` / `min_shadow_compared`: what the gate
counts (comparisons, and the copies the shadow failed as compared and not agreed, of
requests the primary answered 2xx only), why a
route's shadow may not get traffic now (`gate`), and which state changes that rule refuses
(`promotion_refusal`: a promote, weights or rollback giving the shadow traffic). Reads a
fleet `Tally` (shadowstats.py). Pure: no I/O.
"""

from __future__ import annotations

from fractions import Fraction

from gateway.config import RouteConfig
from gateway.domain.shadowstats import Tally, compared_agreed
from gateway.domain.statedoc import StateDoc

__all__ = ["SHADOW_FAILURES", "gate", "gate_counts", "other_status", "promotion_refusal"]

#: the kinds of failure that are the shadow's (a copy it got and did not answer well): the
#: gate counts them as compared and not agreed. Not these: `killed` (a kill cut the copy),
#: `overflow` (our own pool's limit, nothing was sent), `stopped` (a reload stopped it
#: before it was sent), `error` (our own fault)
SHADOW_FAILURES = frozenset({"connect", "timeout", "reset", "malformed", "answer_too_large"})


def gate_counts(t: Tally) -> tuple[int, int, dict[str, int]]:
    """(counted, agreed, failures) for the gate: the comparisons and the copies the shadow
    failed (`SHADOW_FAILURES`, by kind), each failure compared and not agreed; of requests
    the primary answered 2xx only (both sides' 401 to a scanner, or 422 to a bad request,
    says nothing of the model: `min_shadow_compared` met by them compared no model answer).
    Nor a `noise` outcome that excused the answer itself (`Tally.ok_excused`): a primary
    whose text differs from itself in nearly every pair excuses any text, garbage too, and
    an equal `finish_reason` is no evidence the shadow answers alike (inconclusive)."""
    compared, agreed = compared_agreed(t, ok_only=True)
    compared, agreed = compared - t.ok_excused, agreed - t.ok_excused
    failed = {k: v for k, v in sorted(t.ok_failures.items())
              if k in SHADOW_FAILURES and v > 0}
    return compared + sum(failed.values()), agreed, failed


def other_status(t: Tally) -> int:
    """The comparisons of requests the primary answered other than 2xx: not the gate's
    (nor are an older instance's, `Tally.older`: their primary's status is not known)."""
    return compared_agreed(t)[0] - compared_agreed(t, ok_only=True)[0] - t.older


def _gives_traffic(doc: StateDoc, route: str, version: str) -> bool:
    ov = doc.overrides.get(route)
    return ov is not None and (ov.stable == version or ov.weights.get(version, 0.0) > 0)


def gate(rc: RouteConfig, fleet: Tally | None) -> str | None:
    """Why the route's shadow may not get traffic now (None: it may)."""
    sh, a = rc.shadow, rc.analysis
    if sh is None or a is None or a.min_shadow_agreement is None:
        return None
    need, least = a.min_shadow_agreement, a.min_shadow_compared
    counted, agreed, failed = gate_counts(fleet) if fleet is not None else (0, 0, {})
    # (the bar as written, exactly: 0.55 * 100 is 55.00000000000001 in floating point, and
    # 55 agreed of 100 did not meet min_shadow_agreement 0.55)
    if counted >= least and agreed >= Fraction(str(need)) * counted:
        return None
    failures = sum(failed.values())
    how = (f", counting the {failures} cop{'y' if failures == 1 else 'ies'} the shadow "
           "failed (" + ", ".join(
        f"{k} {v}" for k, v in failed.items()) + ") as compared and not agreed"
        if failures else "")
    got, bar = _apart(agreed / counted if counted else 0.0, need)
    seen = (f"it agreed with the primary on {agreed} of {counted} compared requests "
            f"({got}){how}" if counted else
            "no comparison of its answers is known yet")
    others = other_status(fleet) if fleet is not None else 0
    aside = (f"; {others} compared request{'' if others == 1 else 's'} the primary answered "
             "with another status (a 4xx, a 5xx) or an error body do not count"
             if others else "")
    excused = fleet.ok_excused if fleet is not None else 0
    aside += (f"; {excused} agreed only by excusing the answer itself as noise (the primary's "
              "answers differ from each other there: an exact comparison of them says nothing; "
              "compare what must be equal instead, e.g. openai_chat text: none with "
              "max_length_change, or json) do not count" if excused else "")
    aside += _not_json(rc, fleet)
    older = fleet.older if fleet is not None else 0
    aside += (f"; {older} compared by instances of an older version (which do not say the "
              "primary's status) do not count" if older else "")
    return (f"shadow {sh.version!r} of route {rc.name!r} may not get traffic yet: {seen}; "
            f"analysis.min_shadow_agreement needs {bar} over at least {least} compared "
            f"requests, counting only requests the primary answered 2xx{aside} (see "
            f"`killgate shadow report {rc.name}`)")


def _not_json(rc: RouteConfig, fleet: Tally | None) -> str:
    """Under `compare: json`, answers that are not JSON (a streamed chat answer, SSE) are
    compared byte for byte: two samples of a model never agree so, nor does the gate."""
    sh = rc.shadow
    # (counted differences, or with a noise floor, where the shadow differed before it: "$")
    n = max(fleet.differences.get("body", 0), fleet.raw_paths.get("$", 0)) \
        if fleet is not None else 0
    if not n or sh is None or sh.compare_for(rc.protocol).kind != "json":
        return ""
    return (f"; {n} compared answer{'' if n == 1 else 's'} differed as a whole (a body that "
            "is not JSON is compared byte for byte under compare: json; a streamed answer, "
            "text/event-stream?): for streamed chat answers use `compare: openai_chat`, "
            "which reads the stream's text")


def _apart(share: float, need: float) -> tuple[str, str]:
    """Both as percentages, with as many decimals (1 to 4) as tell them apart: 99.989 %
    against a bar of 99.99 % is not '100.0%' against '100.0%'."""
    for places in range(1, 5):
        got, bar = f"{share:.{places}%}", f"{need:.{places}%}"
        if got != bar:
            break
    return got, bar


def promotion_refusal(rc: RouteConfig, before: StateDoc, after: StateDoc,
                      fleet: Tally | None) -> str | None:
    """A change that would give the route's shadow traffic (promote, weights, rollback
    to it) while its agreement is below the gate: why it is refused. None: allowed."""
    sh = rc.shadow
    if sh is None or not _gives_traffic(after, rc.name, sh.version) \
            or _gives_traffic(before, rc.name, sh.version):
        return None
    return gate(rc, fleet)
