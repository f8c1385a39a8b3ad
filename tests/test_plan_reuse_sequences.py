"""Adversarial sequences against the swap's plan reuse (tablebuild._made: an unkill takes
back the plan its kill replaced, a repeat kill the killed plan; RoutePlan's `like`: the
config-only parts of the plan replaced). The risk: a plan reused after something it
depends on changed (a reload between a kill and its unkill, an override, a rollout step,
a latched rollback, rolled-off versions, health and ejection, fail-closed, a drill
route's production kills) routes traffic to a killed version or away from a live one.
Hypothesis drives a `TableHolder` (the live swap) through random sequences of those
changes, kills and unkills repeated, and after every step compares every plan of the
live table with a fresh `build_table` of the same inputs, slot by slot."""

from __future__ import annotations

import textwrap
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.configfile import LoadedConfig, parse_config_text
from gateway.control.table import TableHolder
from gateway.domain.statedoc import StateDoc, kill_key
from gateway.domain.stateparts import HistoryEntry, KillFlag, RolledOff, RouteOverride
from gateway.domain.tablebuild import build_table
from tests.test_plan_reuse import _slots


def _config(variant: int) -> Any:
    """Production route `iris` (stable v1, canary v2, shadow v3), its drill route, and
    `llm` (canary b rolled out by steps); variant 1 moves the stable, weights, steps, a url."""
    a = variant == 0
    return parse_config_text(textwrap.dedent(f"""
        routes:
          - name: iris
            match: {{path_prefix: /v2/models/iris}}
            stable: {"v1" if a else "v2"}
            allow_pin: true
            sticky: {{header: x-user}}
            shadow: {{version: v3, sample: 0.5}}
            fallback: {{status: 503, json: {{error: down}}}}
            versions:
              - {{name: v1, url: "http://127.0.0.1:9101", weight: {90 if a else 20}}}
              - {{name: v2, url: "http://127.0.0.1:9102", weight: {10 if a else 80}}}
              - {{name: v3, url: "http://127.0.0.1:9103", weight: 0}}
          - name: iris-drill
            drill_for: iris
            match: {{path_prefix: /v2/models/iris, header: {{x-killgate-drill-route: "1"}}}}
            stable: {"v1" if a else "v2"}
            allow_pin: true
            versions:
              - {{name: v1, url: "http://127.0.0.1:9101", weight: 100}}
              - {{name: v2, url: "http://127.0.0.1:9102", weight: 0}}
              - {{name: v3, url: "http://127.0.0.1:9103", weight: 0}}
          - name: llm
            match: {{path_prefix: /v1/llm}}
            stable: a
            analysis: {{steps: {"[10, 50, 100]" if a else "[5, 25]"}}}
            versions:
              - {{name: a, url: "http://127.0.0.1:9201", weight: {90 if a else 50}}}
              - {{name: b, url: "http://127.0.0.1:{9202 if a else 9203}", weight: {10 if a else 50}}}
        """))


ROUTES = ("iris", "iris-drill", "llm")
VERSIONS = {"iris": ("v1", "v2", "v3"), "iris-drill": ("v1", "v2", "v3"), "llm": ("a", "b")}
PAIRS = tuple((r, v) for r in ("iris", "llm") for v in VERSIONS[r])

_kill = st.one_of(
    st.tuples(st.just("route"), st.sampled_from(ROUTES), st.none()),
    st.sampled_from(tuple(("version", r, v) for r in ROUTES for v in VERSIONS[r])),
    st.just(("global", None, None)))
_weights = st.fixed_dictionaries({"v1": st.sampled_from((0.0, 10.0, 100.0)),
                                  "v2": st.sampled_from((0.0, 50.0)),
                                  "v3": st.sampled_from((0.0, 5.0))})
_op = st.one_of(
    st.tuples(st.just("kill"), _kill),
    st.tuples(st.just("unkill"), _kill),
    st.tuples(st.just("override"), st.tuples(
        st.sampled_from(("iris", "llm")), st.sampled_from(("rollback", "weights", None)),
        _weights, st.sampled_from(("v1", "v2", None)))),
    st.tuples(st.just("progress"), st.tuples(
        st.integers(0, 3), st.sampled_from(("running", "paused", "done", None)))),
    st.tuples(st.just("history"), st.sampled_from(("v1", "v2", "v3"))),
    st.tuples(st.just("rolled_off"), st.sampled_from(((), ("v1",), ("v2",), ("v1", "v3")))),
    st.tuples(st.just("health"), st.tuples(
        st.frozensets(st.sampled_from(PAIRS), max_size=3), st.booleans())),
    st.tuples(st.just("reload"), st.integers(0, 2)),
    st.tuples(st.just("fail_closed"), st.booleans()),
    st.tuples(st.just("repeat"), st.integers(0, 50)),
)


def _doc_after(doc: StateDoc, op: str, arg: Any, gen: int) -> StateDoc:
    if op in ("kill", "unkill"):
        scope, route, version = arg
        key = kill_key(scope, route, version)
        kills = dict(doc.kills)
        if op == "kill":
            kills[key] = KillFlag(scope, route, version, "alice", "r", "t", gen)
        else:
            kills.pop(key, None)
        return doc.with_changes(generation=gen, kills=kills)
    if op == "override":
        route, kind, weights, stable = arg
        overrides = dict(doc.overrides)
        if kind is None:
            overrides.pop(route, None)
        else:
            if route == "llm":
                weights = {"a": weights["v1"], "b": weights["v2"]}
                stable = "a" if stable else None
            overrides[route] = RouteOverride(stable, weights, "bob", "r", "t", kind)
        return doc.with_changes(generation=gen, overrides=overrides)
    if op == "progress":
        step, state = arg
        progress = dict(doc.progress)
        if state is None:
            progress.pop("llm", None)
        else:
            progress["llm"] = {"canary": "b", "step": step, "state": state,
                                "since": "t", "steps": [10, 50, 100]}
        return doc.with_changes(generation=gen, progress=progress)
    if op == "history":
        entries = (*doc.history.get("iris", ()), HistoryEntry(arg, "t", "a", "r", None, None,
                                                             gen))
        return doc.with_changes(generation=gen, history={**doc.history, "iris": entries[-3:]})
    assert op == "rolled_off"
    recs = tuple(RolledOff(v, f"http://127.0.0.1:910{v[1]}", None, "t", "a", "rollback")
                 for v in arg)
    return doc.with_changes(generation=gen, rolled_off={"iris": recs} if recs else {})


def _assert_fresh(holder: TableHolder, step: int) -> None:
    h = holder.held
    fresh = build_table(h.loaded.config, h.doc, h.unhealthy, h.fail_closed, h.state_unknown,
                        h.ejected)
    assert [p.name for p in holder.table.routes] == [p.name for p in fresh.routes]
    for live, want in zip(holder.table.routes, fresh.routes, strict=True):
        assert live.config is want.config, (step, live.name)
        assert _slots(live) == _slots(want), (step, live.name)


CONFIGS = [_config(0), _config(1), _config(0)]  # (2: the same file parsed again)


@settings(max_examples=120, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_op, min_size=1, max_size=40))
def test_a_reused_plan_is_a_fresh_build_after_any_sequence(ops: list[tuple[str, Any]]) -> None:
    holder = TableHolder(LoadedConfig(CONFIGS[0], "sha256:0", None), StateDoc())
    gen = 1
    done: list[StateDoc] = [holder.doc]
    for i, (op, arg) in enumerate(ops):
        gen += 1
        if op == "repeat":  # an earlier document's content again (a kill, its unkill, ...)
            holder.apply_doc(done[arg % len(done)].with_changes(generation=gen))
        elif op == "health":
            down, all_ejected = arg
            holder.set_unhealthy(down, down if all_ejected else frozenset())
        elif op == "reload":
            holder.set_config(LoadedConfig(CONFIGS[arg], f"sha256:{arg}", None))
        elif op == "fail_closed":
            holder.set_fail_closed(arg)
        else:
            holder.apply_doc(_doc_after(holder.doc, op, arg, gen))
        done.append(holder.doc)
        _assert_fresh(holder, i)


def test_kill_reload_override_unkill_never_revives_the_plan_before_the_kill() -> None:
    """The sequence the memo was suspected of: a kill, a reload to a config that moves the
    weights, an override, the unkill: the live plan is the new config's, with the
    override's weights, and the killed version is back only as the fresh build has it."""
    holder = TableHolder(LoadedConfig(CONFIGS[0], "sha256:0", None), StateDoc())
    before = holder.table.by_name["iris"]
    kill = KillFlag("version", "iris", "v2", "alice", "r", "t", 2)
    holder.apply_doc(StateDoc(generation=2, kills={kill.key: kill}))
    assert "v2" not in holder.table.by_name["iris"].effective_weights() or \
        holder.table.by_name["iris"].effective_weights()["v2"] == 0.0
    holder.set_config(LoadedConfig(CONFIGS[1], "sha256:1", None))
    ov = RouteOverride("v1", {"v1": 100.0, "v2": 0.0, "v3": 0.0}, "bob", "r", "t", "rollback")
    holder.apply_doc(StateDoc(generation=3, kills={kill.key: kill}, overrides={"iris": ov}))
    holder.apply_doc(StateDoc(generation=4, overrides={"iris": ov}))
    got = holder.table.by_name["iris"]
    assert got is not before and got.effective_weights()["v1"] == 100.0
    _assert_fresh(holder, 0)
    holder.apply_doc(StateDoc(generation=5))  # the release: the new file's weights
    assert holder.table.by_name["iris"] is not before
    assert holder.table.by_name["iris"].effective_weights()["v2"] > 0
    _assert_fresh(holder, 1)
