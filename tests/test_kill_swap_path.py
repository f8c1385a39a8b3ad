"""A receiver's swap of a kill (impkill8, benchmarks/RESULTS.md §53): a route whose kills
alone changed has only its kills read again (tablebuild._rekilled: its other inputs are
its plan's), the table holder adopts a document with its inputs read from what it holds
(apply_doc), and a table that replaces plans of the one before under the same overrides
has no override warning to look for (_warn_unservable). The equality with a full build
over random sequences is tests/test_plan_reuse_sequences.py's; here, that the short paths
are the ones taken, and where they must not be."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.configfile import LoadedConfig
from gateway.control import table as tablemod
from gateway.control.table import TableHolder
from gateway.domain import tablebuild
from gateway.domain.statedoc import KillFlag, RouteOverride, StateDoc, kill_key
from gateway.domain.tablebuild import _kills, build_table
from tests.test_plan_reuse import _slots
from tests.test_plan_reuse_sequences import _config

pytestmark = pytest.mark.timeout(30)


def _flag(scope: str, route: str | None, version: str | None, gen: int) -> KillFlag:
    return KillFlag(scope, route, version, "alice", "r", "t", gen)  # type: ignore[arg-type]


def _killed(doc: StateDoc, gen: int, *keys: tuple[str, str | None, str | None],
            **parts: Any) -> StateDoc:
    kills = dict(doc.kills)
    for scope, route, version in keys:
        kills[kill_key(scope, route, version)] = _flag(scope, route, version, gen)
    return doc.with_changes(generation=gen, kills=kills, **parts)


def _same_as_full_build(holder: TableHolder, counted: list[str] | None = None) -> None:
    """Every plan of the holder's table is the full build's (whose own `_plan` calls are
    taken off `counted`)."""
    n = len(counted) if counted is not None else 0
    held = holder.held
    full = build_table(held.loaded.config, held.doc, held.unhealthy, held.fail_closed,
                       held.state_unknown, held.ejected)
    assert [p.name for p in holder.table.routes] == [p.name for p in full.routes]
    for plan in holder.table.routes:
        assert _slots(plan) == _slots(full.by_name[plan.name]), plan.name
    if counted is not None:
        del counted[n:]


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[str]:
    calls: list[str] = []
    real = getattr(module, name)

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(getattr(args[0], "name", "?"))
        return real(*args, **kw)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_kill_alone_reads_only_the_kills_of_its_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """A version kill, then a route kill of the production route (which holds on its drill
    route too), then their unkills: no route's plan is made whole (`_plan`), and each
    table is the full build. Failed before: `_plan` made the killed route's every input."""
    holder = TableHolder(LoadedConfig(_config(0), "sha256:x", None), StateDoc(generation=1))
    plans = _counting(monkeypatch, tablebuild, "_plan")
    doc = _killed(holder.doc, 2, ("version", "iris", "v2"))
    assert holder.apply_doc(doc)
    _same_as_full_build(holder, plans)
    assert holder.table.by_name["iris"].excluded == {"v2": "killed"}
    doc = _killed(doc, 3, ("route", "iris", None))
    assert holder.apply_doc(doc)
    _same_as_full_build(holder, plans)
    assert holder.table.by_name["iris-drill"].killed == "route"  # (its production's kill)
    assert holder.apply_doc(doc.with_changes(generation=4, kills={}))
    _same_as_full_build(holder, plans)
    assert plans == []


def test_a_kill_with_another_change_of_its_route_makes_its_plan_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill that comes with an override of its route (or of the production route of a
    drill route), or under passive ejection: `_rekilled` would keep weights, pins and the
    stable the plan was made with; the plan is made whole (`_plan`), equal to a full build."""
    holder = TableHolder(LoadedConfig(_config(0), "sha256:x", None), StateDoc(generation=1))
    plans = _counting(monkeypatch, tablebuild, "_plan")
    ov = RouteOverride("v2", {"v1": 0.0, "v2": 100.0, "v3": 0.0}, "bob", "rb", "t", "rollback")
    doc = _killed(holder.doc, 2, ("version", "iris", "v3"), overrides={"iris": ov})
    assert holder.apply_doc(doc)
    _same_as_full_build(holder, plans)
    assert sorted(plans) == ["iris", "iris-drill"]  # (the drill route: its production's)
    assert holder.table.by_name["iris"].stable == "v2"
    holder.set_unhealthy(frozenset({("llm", "a")}), frozenset({("llm", "a")}))
    plans.clear()  # (a change of health: every plan made whole)
    assert holder.apply_doc(_killed(doc, 3, ("version", "llm", "b")))
    _same_as_full_build(holder, plans)
    assert plans == ["llm"]  # (ejected: the plan may give an ejected version back)


def test_a_routes_kills_are_kill_keys() -> None:
    """`_kills` spells the keys itself: they are `kill_key`'s, for a route, its versions
    and a drill route's production route."""
    cfg = _config(0)
    drill, prod = cfg.route("iris-drill"), cfg.route("iris")
    assert drill is not None and prod is not None
    for scope, version in (("route", None), ("version", "v1"), ("version", "v3")):
        for route in ("iris", "iris-drill"):
            doc = StateDoc(kills={kill_key(scope, route, version): _flag(
                scope, route, version, 1)})
            killed, excluded = _kills(drill, doc, frozenset(), False, False)
            assert killed == ("route" if scope == "route" else None)
            assert excluded == ({version: "killed"} if version else {})
            killed, excluded = _kills(prod, doc, frozenset({("iris", "v2")}), False, False)
            mine = route == "iris"
            assert killed == ("route" if scope == "route" and mine else None)
            assert excluded == {**({version: "killed"} if version and mine else {}),
                                "v2": "unhealthy"}
    assert _kills(prod, StateDoc(), frozenset(), True, False)[0] == "global"


def test_a_kill_under_the_same_overrides_looks_for_no_override_warning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill's swap on every instance: the plans it replaces have the overrides and
    configs of the ones before, so no `override_unservable` line can change; none is
    looked for. One that changes an override still is. Failed before: each replaced
    plan's override was read (override_missing)."""
    holder = TableHolder(LoadedConfig(_config(0), "sha256:x", None), StateDoc(generation=1))
    looked = _counting(monkeypatch, tablemod, "override_missing")
    doc = _killed(holder.doc, 2, ("version", "llm", "b"))
    assert holder.apply_doc(doc)
    assert looked == []
    ov = RouteOverride("a", {"a": 100.0, "b": 0.0, "zz": 5.0}, "bob", "rb", "t", "weights")
    assert holder.apply_doc(doc.with_changes(generation=3, overrides={"llm": ov}))
    assert looked and set(looked) == {"llm"}
