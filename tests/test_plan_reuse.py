"""A kill's swap builds the killed route's plan again from the plan it replaces (`like`):
the parts made of the route's config alone are taken from it, not built again (impkill2:
~18k of the ~80k instructions of `RoutePlan` a kill, on every instance). What that relies
on: `like` is a plan of the very same config object (configs are frozen). Pinned here: a
plan built with `like` has every slot a fresh build has, equal; and once the config
changes (a reload: new config objects), nothing of the old config's plan survives a swap."""

from __future__ import annotations

from typing import Any

from gateway.configfile import LoadedConfig, parse_config_text
from gateway.control.table import TableHolder
from gateway.domain.routing import RoutePlan
from gateway.domain.statedoc import KillFlag, StateDoc
from gateway.domain.tablebuild import build_table, rebuild_table


def _config(variant: int) -> Any:
    """One route whose every config-only part differs between variant 0 and 1."""
    a = variant == 0
    return parse_config_text(f"""
routes:
  - name: iris
    match:
      path_prefix: {"/v2/Models/iris" if a else "/v1/x"}
      host: {"a.example" if a else "b.example"}
      header: {{x-tenant: {"t1" if a else "t2"}}}
      model: {"m1" if a else "m2"}
      case_sensitive: {"false" if a else "true"}
    stable: v1
    sticky: {{header: {"x-user" if a else "x-other"}}}
    allow_pin: {"true" if a else "false"}
    protocol: {"openai" if a else "http"}
    timeouts: {{total: {"30s" if a else "7s"}, idle: {"10s" if a else "3s"}}}
    retry: {{retry_on: [{"reset" if a else "503"}], attempts: {2 if a else 3}}}
    analysis: {{max_per_key: {10 if a else 20}, max_per_client: {5 if a else 6}}}
    fallback: {{status: {503 if a else 500}, json: {{error: {"down" if a else "gone"}}}}}
    shadow: {{version: v2, sample: {0.5 if a else 0.25}}}
    versions:
      - {{name: v1, url: "http://127.0.0.1:{9101 if a else 9201}", weight: 100, model: {"x" if a else "y"}}}
      - {{name: v2, url: "http://127.0.0.1:{9102 if a else 9202}", weight: 0}}
""")


def _slots(plan: RoutePlan) -> dict[str, Any]:
    """Every slot of a plan, as values (targets by their fields, not identity)."""
    out = {}
    for name in RoutePlan.__slots__:
        if name in ("_prior", "_inputs"):  # (the memo's: what it was made of, how)
            continue
        v = getattr(plan, name)  # (AttributeError: a slot `like` never set)
        if name == "targets":
            v = {n: repr(t) for n, t in v.items()}
        elif name in ("shadow", "_only", "fixed") and v is not None:
            v = repr(v)
        elif name == "_failover":
            v = {n: [repr(t) for t in ts] for n, ts in v.items()}
        out[name] = v
    return out


KILLED = StateDoc(generation=1, kills={"version:iris:v2": KillFlag(
    "version", "iris", "v2", "alice", "r", "t", 1)})


def test_a_plan_built_like_another_of_its_config_has_every_slot_of_a_fresh_one() -> None:
    cfg = _config(0)
    table = build_table(cfg, StateDoc())
    for doc in (KILLED, StateDoc(generation=2)):  # a kill, its unkill
        before = table.by_name["iris"]
        table = rebuild_table(table, cfg, doc)
        rebuilt = table.by_name["iris"]
        assert rebuilt is not before and rebuilt.targets is before.targets  # (reused)
        assert _slots(rebuilt) == _slots(build_table(cfg, doc).by_name["iris"])


def test_a_changed_config_leaves_nothing_of_the_old_plan_after_a_swap() -> None:
    """A reload (new config objects, the same route name), then a kill: the swap's plan is
    the new config's in every part, never one the old config's plan carried."""
    old, new = _config(0), _config(1)
    holder = TableHolder(LoadedConfig(old, "sha256:a", None), StateDoc())
    old_plan = holder.table.by_name["iris"]
    holder.set_config(LoadedConfig(new, "sha256:b", None))
    holder.apply_doc(KILLED)
    got = _slots(holder.table.by_name["iris"])
    assert got == _slots(build_table(new, KILLED).by_name["iris"])
    stale = _slots(old_plan)
    changed = {k for k in got if k not in ("config", "excluded", "_elig_w", "_elig_names",
                                          "_elig_cum", "_elig_total", "_eligible",
                                          "_servable", "_pinnable", "_spare", "_failover")}
    assert {k for k in changed if got[k] == stale[k]} <= {
        "name", "match_keys", "weights", "_all_names", "_all_cum", "_all_total", "killed", "stable",
        "previous", "rolled_off", "override_unservable", "shadow_off", "_heir", "_only",
        "fixed"}  # (the state's parts; the name and how many match keys: alike in both)
    # ... and a plan handed a plan of another config as `like` takes nothing from it
    direct = RoutePlan(new.routes[0], {"v1": 100.0, "v2": 0.0}, "v1", {}, None,
                       like=old_plan)
    assert _slots(direct) == _slots(build_table(new, StateDoc()).by_name["iris"])


UNKILLED = StateDoc(generation=2)


def _chain(plan: RoutePlan) -> int:
    n, p = 0, plan._prior
    while p is not None:
        n, p = n + 1, p._prior
        assert n < 5, "a chain of plans kept alive"
    return n


def test_an_unkill_takes_back_the_plan_its_kill_replaced_and_nothing_else_does() -> None:
    """A kill then its unkill: the unkill's swap takes back the plan from before the kill
    (on every instance: not built again), the kill again takes back the killed one; each
    equal to a fresh build. A reload or a health change in between: built afresh."""
    cfg = _config(0)
    holder = TableHolder(LoadedConfig(cfg, "sha256:a", None), StateDoc())
    open_plan = holder.table.by_name["iris"]
    holder.apply_doc(KILLED)
    killed_plan = holder.table.by_name["iris"]
    gen = 2
    for _ in range(50):
        holder.apply_doc(StateDoc(generation=gen))
        assert holder.table.by_name["iris"] is open_plan
        holder.apply_doc(KILLED.with_changes(generation=gen + 1))
        assert holder.table.by_name["iris"] is killed_plan
        assert _chain(holder.table.by_name["iris"]) <= 1
        gen += 2
    assert _slots(killed_plan) == _slots(build_table(cfg, KILLED).by_name["iris"])
    assert _slots(open_plan) == _slots(build_table(cfg, UNKILLED).by_name["iris"])
    # a reload in between: the unkill's plan is the new config's, built afresh
    new = _config(1)
    holder.set_config(LoadedConfig(new, "sha256:b", None))
    holder.apply_doc(StateDoc(generation=gen))
    got = holder.table.by_name["iris"]
    assert got is not open_plan and got.config is new.routes[0]
    assert _slots(got) == _slots(build_table(new, UNKILLED).by_name["iris"])
    # a health change between a kill and its unkill: the unkill's plan has it
    holder.apply_doc(KILLED.with_changes(generation=gen + 1))
    before_kill = holder.table.by_name["iris"]
    down = frozenset({("iris", "v1")})
    holder.set_unhealthy(down)
    holder.apply_doc(StateDoc(generation=gen + 2))
    got = holder.table.by_name["iris"]
    assert got.excluded == {"v1": "unhealthy"} and got is not before_kill
    assert _slots(got) == _slots(build_table(new, UNKILLED, down).by_name["iris"])
