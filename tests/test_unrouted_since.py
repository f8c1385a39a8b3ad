"""`kills.unrouted_since` (the table listener's `kills_unrouted` warning on every swap)
against the rule it replaced there, `unrouted(new) - unrouted(old)` over every route: the
same keys for any two kill sets and any routes, reading only the kills that differ (impkill2:
~24k instructions a kill for one route, and every route's versions at each swap before)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.configfile import parse_config_text
from gateway.domain.kills import unrouted, unrouted_since
from gateway.domain.statedoc import KillFlag, StateDoc, kill_key

NAMES = ["r1", "r2", "r3", "v1", "v2"]
CFG = parse_config_text("""
routes:
  - name: r1
    match: {path_prefix: /r1}
    stable: v1
    versions: [{name: v1, url: "http://127.0.0.1:9"}, {name: v2, url: "http://127.0.0.1:9"}]
  - name: r2
    match: {path_prefix: /r2}
    stable: v1
    versions: [{name: v1, url: "http://127.0.0.1:9"}]
""")
FLAGS = st.builds(
    lambda scope, route, version, gen: KillFlag(
        scope, None if scope == "global" else route,  # type: ignore[arg-type]
        version if scope == "version" else None, "a", "r", "t", gen),
    st.sampled_from(["global", "route", "version"]), st.sampled_from(NAMES),
    st.sampled_from(NAMES), st.integers(1, 3))


def _kills(flags: list[KillFlag], odd: bool) -> dict[str, KillFlag]:
    """Flags by their key; with `odd`, some under another flag's key (a document no
    writer makes: the rule must still be unrouted's)."""
    out = {kill_key(f.scope, f.route, f.version): f for f in flags}
    if odd and len(flags) > 1:
        out[kill_key(flags[0].scope, flags[0].route, flags[0].version)] = flags[1]
    return out


@given(st.lists(FLAGS, max_size=5), st.lists(FLAGS, max_size=5), st.booleans(),
       st.sets(st.sampled_from(["r1", "r2"])))
@settings(max_examples=300, derandomize=True, database=None, deadline=None)
def test_the_same_keys_as_unrouted_new_less_unrouted_old(
        a: list[KillFlag], b: list[KillFlag], odd: bool, names: set[str]) -> None:
    routes = [rc for rc in CFG.routes if rc.name in names]
    by_name = {rc.name: rc for rc in routes}
    for old_flags in (a, a + b[:2]):  # (kills kept, kills added)
        old = StateDoc(generation=1, kills=_kills(old_flags, odd))
        new = StateDoc(generation=2, kills=_kills(b + old_flags[:1], False))
        want = unrouted(new, routes) - unrouted(old, routes)
        assert unrouted_since(old, new, by_name.get) == want


def test_a_key_whose_flag_names_another_route_now_is_read_again() -> None:
    """The same key, a flag of the same scope naming another route (no writer makes it;
    a document is taken as it reads): judged by its flag, as `unrouted` judges it."""
    key = "version:r1:v1"
    old = StateDoc(generation=1, kills={key: KillFlag("version", "r1", "v1", "a", "r", "t", 1)})
    new = StateDoc(generation=2, kills={key: KillFlag("version", "r9", "v1", "a", "r", "t", 1)})
    by_name = {rc.name: rc for rc in CFG.routes}
    assert unrouted(new, CFG.routes) - unrouted(old, CFG.routes) == {key}
    assert unrouted_since(old, new, by_name.get) == {key}
