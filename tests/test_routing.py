"""The pure routing core: split accuracy, sticky ramp-monotonicity, failover, pins, kills."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from gateway.configfile import parse_config_text
from gateway.domain.routing import Choice, path_matches
from gateway.domain.statedoc import KillFlag, StateDoc
from gateway.domain.tablebuild import build_table


def _cfg(w1: float = 90, w2: float = 10, extra: str = "", stable: str = "v1"):
    return parse_config_text(f"""
routes:
  - name: iris
    match: {{path_prefix: /v2/models/iris}}
    stable: {stable}
    sticky: {{header: x-user-id}}
    allow_pin: true
    versions:
      - {{name: v1, url: "http://127.0.0.1:9101", weight: {w1}}}
      - {{name: v2, url: "http://127.0.0.1:9102", weight: {w2}}}
{extra}""")


def _kill(scope: str, route: str | None = None, version: str | None = None) -> KillFlag:
    return KillFlag(scope, route, version, "t", "r", "now", 1)  # type: ignore[arg-type]


def test_split_90_10_within_one_point_over_20000() -> None:
    plan = build_table(_cfg(), StateDoc()).by_name["iris"]
    rng = random.Random(7)
    counts = Counter(plan.choose(None, None, rng.random).target.name for _ in range(20_000))
    share = counts["v2"] / 20_000
    # binomial sd = 0.21 points; ±1 point is ~4.7 sd
    assert abs(share - 0.10) <= 0.01, share


def test_sticky_user_always_same_version() -> None:
    plan = build_table(_cfg(50, 50), StateDoc()).by_name["iris"]
    seen = {plan.choose("alice", None, random.random).target.name for _ in range(1000)}
    assert len(seen) == 1
    assert plan.choose("alice", None, random.random).decision == "sticky"


def test_sticky_ramp_is_monotonic_and_moves_about_twenty_percent() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    at10 = build_table(_cfg(90, 10), StateDoc()).by_name["iris"]
    at30 = build_table(_cfg(70, 30), StateDoc()).by_name["iris"]
    before = {u: at10.choose(u, None, random.random).target.name for u in users}
    after = {u: at30.choose(u, None, random.random).target.name for u in users}
    back = [u for u in users if before[u] == "v2" and after[u] == "v1"]
    moved = [u for u in users if before[u] == "v1" and after[u] == "v2"]
    assert back == []  # nobody leaves the canary when it grows
    assert abs(len(moved) / len(users) - 0.20) < 0.015
    assert abs(sum(v == "v2" for v in before.values()) / len(users) - 0.10) < 0.01


def test_bucketing_is_stable_across_processes() -> None:
    import subprocess
    import sys

    code = ("from gateway.domain.bucketing import bucket_score as b;"
            "print(repr(b('iris','v2','alice',10.0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env={"PYTHONHASHSEED": "123", "PATH": ""})
    from gateway.domain.bucketing import bucket_score

    assert float(out.stdout) == bucket_score("iris", "v2", "alice", 10.0)


def test_killed_version_fails_over_to_the_other() -> None:
    doc = StateDoc(generation=1, kills={"version:iris:v2": _kill("version", "iris", "v2")})
    plan = build_table(_cfg(50, 50), doc).by_name["iris"]
    decisions = Counter()
    for _ in range(2000):
        c = plan.choose(None, None, random.random)
        assert c.target.name == "v1"
        decisions[c.decision] += 1
    assert 0.35 < decisions["failover"] / 2000 < 0.65  # v2's former share
    assert plan.effective_weights() == {"v1": 100.0, "v2": 0.0}


def test_sticky_users_of_a_killed_version_move_others_stay() -> None:
    users = [f"u{i}" for i in range(2000)]
    healthy = build_table(_cfg(50, 50), StateDoc()).by_name["iris"]
    doc = StateDoc(generation=1, kills={"version:iris:v2": _kill("version", "iris", "v2")})
    killed = build_table(_cfg(50, 50), doc).by_name["iris"]
    for u in users:
        a, b = healthy.choose(u, None, random.random), killed.choose(u, None, random.random)
        if a.target.name == "v1":
            assert b.target.name == "v1" and b.decision == "sticky"
        else:
            assert b.target.name == "v1" and b.decision == "failover"


def test_route_and_global_kill() -> None:
    doc = StateDoc(generation=1, kills={"route:iris": _kill("route", "iris")})
    c = build_table(_cfg(), doc).by_name["iris"].choose(None, None, random.random)
    assert c.target is None and c.decision == "killed"
    doc = StateDoc(generation=1, kills={"global": _kill("global")})
    plan = build_table(_cfg(), doc).by_name["iris"]
    assert plan.killed == "global"
    plan = build_table(_cfg(), StateDoc(), fail_closed=True).by_name["iris"]
    assert plan.killed == "global"


def test_every_version_out_means_fallback() -> None:
    table = build_table(_cfg(), StateDoc(), unhealthy=frozenset({("iris", "v1"), ("iris", "v2")}))
    c = table.by_name["iris"].choose(None, None, random.random)
    assert c.target is None and c.decision == "fallback"


def test_unhealthy_stable_with_zero_weight_canary_still_serves() -> None:
    table = build_table(_cfg(100, 0), StateDoc(), unhealthy=frozenset({("iris", "v1")}))
    c = table.by_name["iris"].choose(None, None, random.random)
    assert c.target.name == "v2" and c.decision == "failover"


def test_pin_honoured_unless_excluded() -> None:
    plan = build_table(_cfg(), StateDoc()).by_name["iris"]
    c = plan.choose("alice", "v2", random.random)
    assert (c.target.name, c.decision) == ("v2", "pinned")
    table = build_table(_cfg(), StateDoc(), unhealthy=frozenset({("iris", "v2")}))
    c = table.by_name["iris"].choose(None, "v2", random.random)
    assert (c.target.name, c.decision) == ("v1", "failover")


def test_all_zero_weights_send_everything_to_stable() -> None:
    plan = build_table(_cfg(0, 0, stable="v2"), StateDoc()).by_name["iris"]
    assert {plan.choose(None, None, random.random).target.name for _ in range(200)} == {"v2"}


def test_failover_order_lists_other_eligible_versions() -> None:
    plan = build_table(_cfg(100, 0), StateDoc()).by_name["iris"]
    c = plan.choose(None, None, random.random)
    # v2 has no traffic, but an undelivered request is better served by it than failed
    assert c.target.name == "v1" and [t.name for t in plan.failover_for("v1")] == ["v2"]
    killed = StateDoc(generation=1, kills={"version:iris:v2": _kill("version", "iris", "v2")})
    assert build_table(_cfg(100, 0), killed).by_name["iris"].failover_for("v1") == ()
    plan = build_table(_cfg(50, 50), StateDoc()).by_name["iris"]
    c = plan.choose(None, None, lambda: 0.0)
    assert [t.name for t in plan.failover_for(c.target.name)] == ["v2"]


@pytest.mark.parametrize(("prefix", "path", "ok"), [
    ("/v2/models/iris", "/v2/models/iris", True),
    ("/v2/models/iris", "/v2/models/iris/infer", True),
    ("/v2/models/iris", "/v2/models/iris2/infer", False),
    ("/v1/", "/v1/chat", True),
    ("/", "/anything", True),
])
def test_segment_aware_prefix(prefix: str, path: str, ok: bool) -> None:
    assert path_matches(prefix, path) is ok


def test_longest_prefix_then_most_keys_wins() -> None:
    cfg = parse_config_text("""
routes:
  - {name: all, match: {path_prefix: /}, stable: a, versions: [{name: a, url: "http://h:1"}]}
  - {name: v1, match: {path_prefix: /v1}, stable: a, versions: [{name: a, url: "http://h:2"}]}
  - name: tenant
    match: {path_prefix: /v1, header: {x-tenant: acme}}
    stable: a
    versions: [{name: a, url: "http://h:3"}]
  - {name: host, match: {host: Models.Example.com}, stable: a, versions: [{name: a, url: "http://h:4"}]}
""")
    t = build_table(cfg, StateDoc())
    assert t.match("/v1/x", "", {}, None).name == "v1"
    assert t.match("/v1/x", "", {"x-tenant": "acme"}, None).name == "tenant"
    assert t.match("/v2", "", {}, None).name == "all"
    assert t.match("/v2", "models.example.com", {}, None).name == "all"  # longer prefix first
    cfg2 = parse_config_text("""
routes:
  - {name: host, match: {host: models.example.com}, stable: a, versions: [{name: a, url: "http://h:4"}]}
""")
    assert build_table(cfg2, StateDoc()).match("/x", "models.example.com", {}, None).name == "host"
    assert build_table(cfg2, StateDoc()).match("/x", "other", {}, None) is None


def test_a_version_at_weight_zero_by_override_is_out_of_pins() -> None:
    """A latched rollback (or weights setting a version to 0) excludes it from pins too; a
    version at weight 0 in the file (a dark launch, reached only by pin) stays pinnable."""
    from gateway.domain.statedoc import RouteOverride

    dark = build_table(_cfg(100, 0), StateDoc()).by_name["iris"]
    c = dark.choose(None, "v2", random.random)
    assert (c.target.name, c.decision) == ("v2", "pinned")
    for kind in ("rollback", "weights"):
        ov = RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "alice", "bad", "now", kind)
        plan = build_table(_cfg(50, 50), StateDoc(generation=2, overrides={"iris": ov})) \
            .by_name["iris"]
        c = plan.choose(None, "v2", random.random)
        assert (c.target.name, c.decision) == ("v1", "failover"), kind
        assert plan.choose(None, "v1", random.random).decision == "pinned"


def test_case_insensitive_prefix_and_the_fallback_body_built_once() -> None:
    cfg = parse_config_text("""
routes:
  - name: iris
    match: {path_prefix: /V2/Models/Iris, case_sensitive: false}
    stable: a
    versions: [{name: a, url: "http://h:1"}]
    fallback: {status: 503, json: {error: {type: unavailable, n: [1, 2]}}}
  - {name: all, match: {path_prefix: /}, stable: a, versions: [{name: a, url: "http://h:2"}]}
""")
    t = build_table(cfg, StateDoc())
    for path in ("/v2/models/iris/infer", "/V2/MODELS/IRIS", "/v2/Models/iRiS/x"):
        assert t.match(path, "", {}, None).name == "iris", path
    assert t.match("/v2/models/iris2", "", {}, None).name == "all"
    assert t.by_name["iris"].fallback_body == b'{"error": {"type": "unavailable", "n": [1, 2]}}'
    assert t.by_name["all"].fallback_body == b""


def test_a_new_document_rebuilds_only_the_routes_it_changes() -> None:
    """rebuild_table (what the holder does for a new state document) equals a full build,
    and reuses the plans of every route the document did not change: a kill flips one."""
    from gateway.domain.statedoc import HistoryEntry, RouteOverride
    from gateway.domain.tablebuild import rebuild_table

    routes = "\n".join(f"""  - name: r{i}
    match: {{path_prefix: /r{i}}}
    stable: v1
    allow_pin: true
    versions:
      - {{name: v1, url: "http://127.0.0.1:9101", weight: 90}}
      - {{name: v2, url: "http://127.0.0.1:9102", weight: 10}}""" for i in range(6))
    cfg = parse_config_text("routes:\n" + routes + "\n")
    ov = RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "a", "r", "t", "rollback")
    hist = (HistoryEntry("v2", "t", "a", "r", "http://x", None, 1),)
    docs = [
        StateDoc(),
        StateDoc(generation=1, kills={"route:r1": _kill("route", "r1")}),
        StateDoc(generation=2, kills={"route:r1": _kill("route", "r1"),
                                      "version:r2:v2": _kill("version", "r2", "v2")}),
        StateDoc(generation=3, kills={"version:r2:v2": _kill("version", "r2", "v2")},
                 overrides={"r3": ov}, history={"r4": hist}),
        StateDoc(generation=4, kills={"global": _kill("global")}, overrides={"r3": ov}),
        StateDoc(generation=5, overrides={"r3": ov}),
    ]

    def shape(t):  # type: ignore[no-untyped-def]
        return {p.name: (p.killed, p.excluded, p.stable, p.previous, p.effective_weights(),
                         sorted(p._pinnable)) for p in t.routes}

    for unhealthy in (frozenset(), frozenset({("r5", "v1")})):
        table = build_table(cfg, docs[0], unhealthy)
        for old_doc, doc in itertools.pairwise(docs):
            new = rebuild_table(table, cfg, doc, unhealthy)
            assert shape(new) == shape(build_table(cfg, doc, unhealthy)), doc.generation
            assert new.doc is doc and new.generation == doc.generation
            same = {p.name for p in new.routes if p is table.by_name[p.name]}
            if "global" in old_doc.kills or "global" in doc.kills:
                assert same == set(), doc.generation  # a global kill touches every route
            else:
                assert {"r0", "r5"} <= same  # no document here touches them
                moved = {n for n, s in shape(new).items() if s != shape(table)[n]}
                assert not same & moved  # a route whose plan changed got a new one
            table = new


def test_a_shadow_never_answers_a_client() -> None:
    """The shadow (weight 0) is never weighted, pinned, sticky or failed over to; when the
    stable cannot serve, the route falls back rather than let the shadow answer."""
    cfg = _cfg(100, 0, extra="    shadow: {version: v2, sample: 1.0}")
    plan = build_table(cfg, StateDoc()).by_name["iris"]
    assert plan.shadow is not None and plan.shadow.name == "v2" and plan.shadow_off == ""
    rng = random.Random(3)
    for i in range(300):
        c = plan.choose(f"user-{i}", "v2" if i % 2 else None, rng.random)
        assert c.target is not None and c.target.name == "v1"
    assert [t.name for t in plan.failover_for("v1")] == []
    down = build_table(cfg, StateDoc(), unhealthy=frozenset({("iris", "v1")})).by_name["iris"]
    assert down.choose(None, None, rng.random) == (None, "fallback")
    assert down.effective_weights() == {"v1": 0.0, "v2": 0.0}


def test_a_killed_or_unhealthy_shadow_gets_no_copies_and_a_promoted_one_serves() -> None:
    from gateway.domain.statedoc import RouteOverride

    cfg = _cfg(100, 0, extra="    shadow: {version: v2, sample: 1.0}")
    killed = StateDoc(kills={"version:iris:v2": _kill("version", "iris", "v2")})
    plan = build_table(cfg, killed).by_name["iris"]
    assert plan.shadow is None and plan.shadow_off == "killed"
    plan = build_table(cfg, StateDoc(), unhealthy=frozenset({("iris", "v2")})).by_name["iris"]
    assert plan.shadow is None and plan.shadow_off == "unhealthy"
    ov = RouteOverride("v1", {"v1": 90.0, "v2": 10.0}, "alice", "canary now", "now", "weights")
    plan = build_table(cfg, StateDoc(generation=2, overrides={"iris": ov})).by_name["iris"]
    assert plan.shadow is None and plan.shadow_off == "serving"
    assert plan.effective_weights() == {"v1": 90.0, "v2": 10.0}


def _plain(w2: float = 0, extra: str = "") -> str:
    """One route without pins or sticky keys (what `RoutePlan.fixed` is for)."""
    return f"""
routes:
  - name: iris
    match: {{path_prefix: /v2/models/iris}}
    stable: v1
{extra}    versions:
      - {{name: v1, url: "http://127.0.0.1:9101", weight: 100}}
      - {{name: v2, url: "http://127.0.0.1:9102", weight: {w2}}}
"""


def test_the_fixed_choice_is_what_choose_gives_every_request() -> None:
    plan = build_table(parse_config_text(_plain()), StateDoc()).by_name["iris"]
    assert plan.fixed is not None
    assert plan.fixed == plan.choose(None, None, random.random)
    assert (plan.fixed.target.name, plan.fixed.decision) == ("v1", "weighted")


@pytest.mark.parametrize(("w2", "extra", "doc", "unhealthy"), [
    (10, "", StateDoc(), frozenset()),  # a split: a draw per request
    (0, "    allow_pin: true\n", StateDoc(), frozenset()),  # a request may pin v2
    (0, "    sticky: {header: x-user-id}\n", StateDoc(), frozenset()),  # sticky keys
    (0, "", StateDoc(generation=1, kills={"route:iris": _kill("route", "iris")}),
     frozenset()),  # killed: no version
    (0, "", StateDoc(), frozenset({("iris", "v1")})),  # the stable cannot serve
])
def test_no_fixed_choice_when_a_request_could_be_routed_otherwise(
        w2: float, extra: str, doc: StateDoc, unhealthy: frozenset[tuple[str, str]]) -> None:
    plan = build_table(parse_config_text(_plain(w2, extra)), doc, unhealthy=unhealthy).by_name["iris"]
    assert plan.fixed is None


def test_the_plan_carries_the_settings_every_request_reads() -> None:
    """Timeouts and retry settings are copied onto the plan (slots: a config model's
    attributes are slow to read), and stay what the config says."""
    extra = "    timeouts: {total: 7s, idle: 3s}\n    retry: {attempts: 2, retry_on: [reset]}\n"
    rc_plan = build_table(parse_config_text(_plain(0, extra)), StateDoc()).by_name["iris"]
    assert (rc_plan.total_timeout, rc_plan.idle_timeout) == (7, 3)
    assert rc_plan.retry is rc_plan.config.retry and rc_plan.retry.attempts == 2
    plain = build_table(parse_config_text(_plain()), StateDoc()).by_name["iris"]
    assert plain.retry is None
    assert (plain.total_timeout, plain.idle_timeout) == (plain.config.timeouts.total,
                                                        plain.config.timeouts.idle)
    assert plain.shadow_config is None


def test_the_fixed_choice_follows_every_document_a_kill_flips_in() -> None:
    """`fixed` is the plan's own, never carried over by `rebuild_table` (which reuses a
    plan's config-only parts): after a kill, a version kill, an override moving all traffic,
    an unkill and a release, the proxy's shortcut gives what `choose` gives."""
    from gateway.domain.statedoc import RouteOverride
    from gateway.domain.tablebuild import rebuild_table

    cfg = parse_config_text(_plain())
    ov = RouteOverride("v2", {"v1": 0.0, "v2": 100.0}, "a", "r", "t", "weights")
    steps = [  # (document, fixed, what choose gives)
        (StateDoc(generation=1, kills={"route:iris": _kill("route", "iris")}),
         None, (None, "killed")),
        (StateDoc(generation=2, kills={"version:iris:v1": _kill("version", "iris", "v1")}),
         None, ("v2", "failover")),
        (StateDoc(generation=3), ("v1", "weighted"), ("v1", "weighted")),  # unkilled
        (StateDoc(generation=4, overrides={"iris": ov}), ("v2", "weighted"),
         ("v2", "weighted")),
        (StateDoc(generation=5), ("v1", "weighted"), ("v1", "weighted")),  # released
    ]
    table = build_table(cfg, StateDoc())
    assert table.by_name["iris"].fixed is not None
    for doc, fixed, chosen in steps:
        table = rebuild_table(table, cfg, doc)
        plan = table.by_name["iris"]
        assert (None if plan.fixed is None else _named(plan.fixed)) == fixed, doc
        assert _named(plan.choose(None, None, random.random)) == chosen, doc


def _named(c: Choice) -> tuple[str | None, str]:
    return (c.target.name if c.target is not None else None, c.decision)


def test_the_plan_carries_its_shadow_settings_whether_or_not_the_shadow_can_serve() -> None:
    """`shadow_config` is the route's shadow section as configured (the proxy asks it of
    every answer); `shadow` is the version copies go to, only while it can take them."""
    cfg = _cfg(100, 0, extra="    shadow: {version: v2, sample: 1.0}")
    plan = build_table(cfg, StateDoc()).by_name["iris"]
    assert plan.shadow_config is plan.config.shadow and plan.shadow_config is not None
    assert plan.shadow_config.version == "v2" and plan.shadow is not None
    killed = StateDoc(kills={"version:iris:v2": _kill("version", "iris", "v2")})
    plan = build_table(cfg, killed).by_name["iris"]
    assert plan.shadow is None and plan.shadow_config is plan.config.shadow


def test_a_route_host_with_a_trailing_dot_matches_as_a_request_host_is_read() -> None:
    """A route's `host` is read as a request's Host is (lower case, one trailing dot off):
    `Models.Example.com.` in the file matched no request (ninth hostile review), so a kill
    of that route stopped nothing while its traffic went through a route without a host."""
    cfg = parse_config_text("""
routes:
  - {name: hosted, match: {path_prefix: /, host: Models.Example.com.}, stable: a,
     versions: [{name: a, url: "http://h:1"}]}
  - {name: all, match: {path_prefix: /}, stable: a, versions: [{name: a, url: "http://h:2"}]}
""")
    table = build_table(cfg, StateDoc())
    plan = table.match("/v2/models/iris", "models.example.com", {}, None)
    assert plan is not None and plan.name == "hosted"


@pytest.mark.parametrize("path", ["/v2/models/\u0131r\u0131s/infer", "/v2/models/IR\u0131S",
                                  "/V2/MODEL\u017f/iris"])
def test_a_case_insensitive_route_matches_what_a_backend_upper_cases_to_it(path: str) -> None:
    """`case_sensitive: false` is for backends that compare paths in any case; those that
    upper-case (Java's equalsIgnoreCase, .NET's OrdinalIgnoreCase: ASP.NET Core routing)
    read dotless i (U+0131) as 'I' and long s (U+017F) as 'S', which `str.lower` leaves
    alone: a killed `iris` was reached as /v2/models/%C4%B1r%C4%B1s through the catch-all
    (ninth hostile review)."""
    cfg = parse_config_text("""
routes:
  - {name: iris, match: {path_prefix: /v2/models/iris, case_sensitive: false}, stable: a,
     versions: [{name: a, url: "http://h:1"}]}
  - {name: all, match: {path_prefix: /}, stable: a, versions: [{name: a, url: "http://h:2"}]}
""")
    plan = build_table(cfg, StateDoc()).match(path, "", {}, None)
    assert plan is not None and plan.name == "iris"
