"""Drill plans (domain/drillplan.py): defaults, and every mistake named by its path."""

from __future__ import annotations

import pytest

from gateway.domain.drillplan import parse_plan
from gateway.errors import ConfigError


def test_instances_of_a_plan_are_taken_as_the_command_line_takes_them() -> None:
    """`--instances http://h:8080/` drops the trailing slash; a plan's `instances` kept it,
    so every drill request went to //v2/models/iris, which no route matches: the drill
    opened on the fleet, then aborted with 'no drill request reached v2 (weight 0?)'."""
    p = parse_plan("kind: kill\nroute: r\ninstances: [http://h:8080/, 'http://g:8080']\n")
    assert p.instances == ["http://h:8080", "http://g:8080"]


def test_defaults_and_kind_measures() -> None:
    p = parse_plan("kind: kill\nroute: iris-drill\nversion: v2\n")
    assert (p.rate, p.steady, p.hold, p.settle) == (50, 1.0, 5.0, 2.0)
    assert p.kill_scope == "version" and p.measure == "time_to_kill_ms"
    assert p.targets.time_to_kill_ms.max == 2000 and p.targets.leaks == 0
    assert parse_plan("kind: kill\nroute: r\n").kill_scope == "route"
    assert parse_plan("kind: rollback\nroute: r\n").measure == "time_to_rollback_ms"
    assert parse_plan("kind: failover\nroute: r\nversion: v\n").measure == "time_to_failover_ms"


@pytest.mark.parametrize(("text", "problem"), [
    ("kind: chaos\nroute: r\n", "kind: Input should be"),
    ("kind: kill\n", "route: Field required"),
    ("kind: kill\nroute: r\nrate: 0\n", "rate: Input should be greater than 0"),
    ("kind: kill\nroute: r\nhold: 5\n", "hold: Value error, must be a duration"),
    ("kind: kill\nroute: r\nhold: 2h\n", "hold: Value error, must be > 0 and at most 10m"),
    ("kind: kill\nroute: r\ntargets: {leak: 1}\n", "targets.leak: Extra inputs"),
    ("kind: kill\nroute: r\ninstances: [ftp://x]\n", "instances: Value error, 'ftp://x'"),
    ("kind: failover\nroute: r\n", "names the version that fails"),
    ("kind: kill\nroute: r\nscope: version\n", "scope 'version' needs 'version'"),
    ("kind: store_loss\nroute: r\nhold: 2m\n", "at most 60s"),
    ("kind: kill\nroute: r\nrequest: {path: nope}\n", "request.path: String should match"),
    ("kind: kill\nroute: r\nabort: {error_rate: 2}\n", "abort.error_rate"),
    # (0s read every instance's /metrics in a tight loop; 1h never read twice, so the
    # abort condition could never fire, with nothing said)
    ("kind: kill\nroute: r\nabort: {interval: 0s}\n", "abort.interval: Value error"),
    ("kind: kill\nroute: r\nabort: {interval: 1h}\n", "abort.interval: Value error"),
    # (game day: --rate 1 aborted every drill, blaming each instance for answering "1 drill
    # requests in the steady window (expected >= 3)": it had been sent one)
    ("kind: kill\nroute: r\nrate: 1\n", "at least 3 requests per instance"),
    ("kind: kill\nroute: r\nrate: 10\nsteady: 200ms\n", "raise 'rate' or 'steady'"),
    ("- a\n", "the plan must be a mapping"),
    ("kind: [\n", "plan.yaml: YAML syntax error at line 2"),
    ("kind: kill\nroute: iris-drill\nroute: iris\n", "duplicate key 'route' (line 3)"),
    ("kind: kill\nroute: r\nrate: " + "9" * 5000 + "\n", "a number of more than 64"),
])
def test_every_mistake_is_named(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_plan(text, "plan.yaml")
    assert any(problem in str(p) for p in e.value.problems), e.value.problems


@pytest.mark.parametrize("headers", ['{a: "x\\r\\ny: z"}', '{"a b": x}', '{"": x}',
                                     '{a: "x\\u0001"}'])
def test_request_headers_a_client_cannot_send_are_refused(headers: str) -> None:
    with pytest.raises(ConfigError, match=r"request\.headers"):
        parse_plan(f"kind: kill\nroute: r\nrequest: {{headers: {headers}}}\n")
    assert parse_plan("kind: kill\nroute: r\nrequest: {headers: {x-a: 'b c'}}\n")
