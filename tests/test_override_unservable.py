"""A latched override that gives traffic only to versions this instance's config lacks
(a rollback to v1 made through an instance whose file still has v1): no version serves
here; the file's stable taking everything would undo the rollback on this instance in
silence (pure: domain/tablebuild.py)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from gateway.configfile import load_config, parse_config_text
from gateway.control.table import TableHolder
from gateway.domain.overrides import release, rollback, set_weights
from gateway.domain.routing import FALLBACK, KILLED
from gateway.domain.statedoc import KillFlag, StateDoc, apply_change
from gateway.domain.tablebuild import build_table, rebuild_table

pytestmark = pytest.mark.timeout(30)

_ROUTE = """
routes:
  - name: iris
    match: {{path_prefix: /iris}}
    allow_pin: true
    sticky: {{header: x-user}}
    stable: {stable}
    versions:
{versions}"""
_V = {"v1": '      - {name: v1, url: "http://h:1", weight: 100}\n',
      "v2": '      - {name: v2, url: "http://h:2", weight: 100}\n',
      "v3": '      - {name: v3, url: "http://h:3", weight: 0}\n'}
WITH_V1 = parse_config_text(_ROUTE.format(stable="v2", versions=_V["v1"] + _V["v2"].replace(
    "100", "0")))
WITHOUT_V1 = parse_config_text(_ROUTE.format(stable="v2", versions=_V["v2"] + _V["v3"]))


def _rolled_back_to_v1() -> StateDoc:
    """A rollback to v1 made through an instance whose file has v1."""
    ch = rollback(StateDoc(), WITH_V1.routes[0], "v1", "alice", "v2 is bad", "t1")
    return apply_change(StateDoc(), ch)


def test_an_override_naming_only_missing_versions_serves_none_of_the_others() -> None:
    doc = _rolled_back_to_v1()
    plan = build_table(WITHOUT_V1, doc).by_name["iris"]
    assert plan.override_unservable == ("v1",)
    assert plan.effective_weights() == {"v2": 0.0, "v3": 0.0}
    for sticky, pin in ((None, None), ("u1", None), (None, "v2"), ("u2", "v3")):
        choice = plan.choose(sticky, pin, random.random)
        assert choice == (None, FALLBACK), (sticky, pin, choice)
    assert plan.fixed is None and not plan.can_serve("v2") and plan.failover_for("v2") == ()
    shadowed = parse_config_text(_ROUTE.format(stable="v2", versions=_V["v2"] + _V["v3"])
                                 .replace("    stable: v2", "    stable: v2\n    shadow: "
                                          "{version: v3, sample: 1.0}"))
    dark = build_table(shadowed, doc).by_name["iris"]
    assert dark.shadow is None and dark.shadow_off == "unservable"  # no copies: none served
    # a kill still answers as a kill
    kill = KillFlag("route", "iris", None, "bob", "r", "t2", 2)
    killed = build_table(WITHOUT_V1, StateDoc(generation=2, overrides=doc.overrides,
                                              kills={"route:iris": kill})).by_name["iris"]
    assert killed.choose(None, None, random.random).decision == KILLED
    # the instance whose file has v1 serves it; a partial rebuild agrees with a full one
    assert build_table(WITH_V1, doc).by_name["iris"].override_unservable == ()
    old = build_table(WITHOUT_V1, StateDoc())
    assert old.by_name["iris"].override_unservable == ()
    assert rebuild_table(old, WITHOUT_V1, doc).by_name["iris"].override_unservable == ("v1",)


def test_an_override_that_still_serves_a_present_version_is_not_unservable() -> None:
    rc = WITH_V1.routes[0]
    both = parse_config_text(_ROUTE.format(stable="v2", versions=_V["v1"] + _V["v2"]))
    ch = set_weights(StateDoc(), both.routes[0], {"v1": 50, "v2": 50}, "a", "r", "t")
    doc = apply_change(StateDoc(), ch)
    plan = build_table(WITHOUT_V1, doc).by_name["iris"]  # v1 missing, v2 still at 50
    assert plan.override_unservable == ()
    assert plan.effective_weights() == {"v2": 100.0, "v3": 0.0}
    # a release hands the route back to the file's weights
    released = apply_change(_rolled_back_to_v1(), release(
        _rolled_back_to_v1(), rc, "alice", "v1 retired", "t3"))
    plan = build_table(WITHOUT_V1, released).by_name["iris"]
    assert plan.override_unservable == ()
    assert plan.choose(None, None, random.random).target.name == "v2"  # type: ignore[union-attr]


def test_an_instance_starting_on_such_a_file_warns_once_when_its_state_loads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The latch check at start passed against the empty state; the state loaded after it
    holds the rollback: the table built then serves no version, with one warning."""
    caplog.set_level(logging.INFO, "killgate")
    path = tmp_path / "k.yaml"
    path.write_text(_ROUTE.format(stable="v2", versions=_V["v2"] + _V["v3"]))
    holder = TableHolder(load_config(path), state_unknown=True)
    doc = _rolled_back_to_v1()
    assert holder.apply_doc(doc) and holder.state_loaded()
    plan = holder.table.by_name["iris"]
    assert plan.choose(None, None, random.random) == (None, FALLBACK)
    holder.set_unhealthy(frozenset({("iris", "v3")}))  # another build: no second warning
    ended = apply_change(doc, release(doc, WITHOUT_V1.routes[0], "bob", "over", "t4"))
    assert holder.apply_doc(ended)
    assert holder.table.by_name["iris"].choose(None, None, random.random).target is not None
    lines = [(r.getMessage(), r.levelno) for r in caplog.records
             if r.getMessage().startswith("override_")]
    assert lines == [("override_unservable", logging.WARNING),
                     ("override_servable", logging.INFO)], lines
    [warned] = [r for r in caplog.records if r.getMessage() == "override_unservable"]
    fields = warned.kg_fields  # type: ignore[attr-defined]
    assert fields["route"] == "iris" and fields["versions"] == "v1", fields
    assert "killgate release iris" in fields["action"], fields


def test_an_override_partly_missing_is_reported_once_and_served_by_the_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A `weights` of v1 90 / v2 10 read by an instance whose file lacks v1: v2 takes all of
    this instance's traffic, not 10 %. Not refused (a version the override gives traffic
    still serves), but said: one warning, `override_missing` in /v1/status, and a line in
    `killgate status`."""
    from gateway.cli.admin import _status_text
    from gateway.domain.tablebuild import override_missing

    caplog.set_level(logging.INFO, "killgate")
    both = parse_config_text(_ROUTE.format(stable="v2", versions=_V["v1"] + _V["v2"]))
    doc = apply_change(StateDoc(), set_weights(StateDoc(), both.routes[0],
                                               {"v1": 90, "v2": 10}, "a", "r", "t"))
    path = tmp_path / "k.yaml"
    path.write_text(_ROUTE.format(stable="v2", versions=_V["v2"] + _V["v3"]))
    holder = TableHolder(load_config(path), state_unknown=True)
    assert holder.apply_doc(doc) and holder.state_loaded()
    plan = holder.table.by_name["iris"]
    assert plan.override_unservable == () and plan.effective_weights()["v2"] == 100.0
    assert override_missing(plan.config, holder.table.doc) == ("v1",)
    holder.set_unhealthy(frozenset({("iris", "v3")}))  # another build: no second warning
    warned = [r for r in caplog.records if r.getMessage() == "override_partly_unservable"]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    fields = warned[0].kg_fields  # type: ignore[attr-defined]
    assert fields["versions"] == "v1" and "killgate release iris" in fields["action"], fields
    assert override_missing(both.routes[0], doc) == ()  # an instance with v1: nothing
    text = _status_text({"instance": "i", "generation": 1, "kills": [], "routes": {"iris": {
        "stable": "v2", "latched": True, "override_unservable": None,
        "override_missing": ["v1"], "versions": {}}}})
    assert "PARTLY SERVING: route iris's latched override gives traffic to v1" in text, text


def test_a_swap_s_warnings_read_only_the_plans_it_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollback reaching an instance of 200 more routes (the swap replaces iris's plan
    in the table it held): warned as before, and the warnings read iris's plan only, not
    a name of every route to find the plans that changed (~0.4M instructions at 500
    routes, every kill, every instance: callgrind). Fails without it (201 names read)."""
    from gateway.configfile import LoadedConfig
    from gateway.control import table as table_mod

    caplog.set_level(logging.INFO, "killgate")
    more = "".join(f"""
  - name: r{i}
    match: {{path_prefix: /r{i}}}
    stable: v1
    versions:
      - {{name: v1, url: "http://h:1", weight: 100}}""" for i in range(200))
    cfg = parse_config_text(_ROUTE.format(stable="v2", versions=_V["v2"] + _V["v3"]) + more)
    holder = TableHolder(LoadedConfig(cfg, "sha256:t", None), StateDoc(generation=1))
    names: list[object] = []
    name = table_mod._NAME
    monkeypatch.setattr(table_mod, "_NAME", lambda p: names.append(p) or name(p))
    doc = _rolled_back_to_v1()
    assert holder.apply_doc(doc.with_changes(generation=doc.generation + 1))
    assert holder.table.replaced is not None and holder.table.replaced[1] == ("iris",)
    assert holder.table.by_name["iris"].override_unservable == ("v1",)
    assert [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("override_")] == ["override_unservable"]
    assert names == [], len(names)
