"""admin/drillsupport.py: the drill gauges come from the replicated state alone."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.admin.drillsupport import export_metrics
from gateway.domain.statedoc import StateDoc
from gateway.telemetry.metrics import Metrics


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(m.render())
            for s in fam.samples if s.name.startswith("killgate_drill_last")}


def _result(kind: str, verdict: str, **summary: object) -> dict[str, object]:
    return {"drill": "d", "kind": kind, "route": "iris-drill", "verdict": verdict,
            "time": 1.7e9, "duration_s": 9.5, "summary": summary}


def test_a_later_drill_without_a_measure_leaves_no_stale_value() -> None:
    """A drill that never saw the kill (or ended by `drill restore`, without numbers) left
    the previous drill's time to kill, leaks and duration on /metrics, as if measured now;
    a result the state dropped stayed exported on the instances that had seen it."""
    m = Metrics()
    lab = (("kind", "kill"), ("route", "iris-drill"))
    first = StateDoc(drill_results={"kill:iris-drill": _result(
        "kill", "passed", leaks=0, errors=0, time_to_kill_ms={"max": 40.0}),
        "rollback:iris-drill": _result("rollback", "passed")})
    export_metrics(m, first)
    got = _samples(m)
    assert got[("killgate_drill_last_seconds",
                tuple(sorted((*lab, ("measure", "time_to_kill")))))] == 0.04
    assert got[("killgate_drill_last_leaks", lab)] == 0
    second = StateDoc(drill_results={"kill:iris-drill": {
        **_result("kill", "aborted", restored_by="killgate drill restore"),
        "duration_s": None}})
    export_metrics(m, second)
    got = _samples(m)
    assert got[("killgate_drill_last_passed", lab)] == 0
    assert not [k for k in got if k[0] in ("killgate_drill_last_seconds",
                                           "killgate_drill_last_leaks",
                                           "killgate_drill_last_duration_seconds")], got
    assert not [k for k in got if ("kind", "rollback") in k[1]], got
