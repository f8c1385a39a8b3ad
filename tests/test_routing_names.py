"""Sticky bucketing with long route and version names (names may be 64 characters).

blake2b's salt and person hold 16 bytes: names cut to 16 bytes made two versions whose names
share their first 16 bytes (`llama-3-8b-instruct-v1` / `-v2`) hash every user alike, so the
version with the larger weight took every sticky user, and routes sharing a 16-byte prefix
split their users alike.
"""

from __future__ import annotations

import random
from collections import Counter

from gateway.configfile import parse_config_text
from gateway.domain.bucketing import bucket_score
from gateway.domain.statedoc import StateDoc
from gateway.domain.tablebuild import build_table

USERS = [f"user-{i}" for i in range(20_000)]


def _cfg(route: str, v1: str, v2: str, w1: float = 90, w2: float = 10) -> str:
    return f"""
  - name: {route}
    match: {{path_prefix: /{route}}}
    stable: {v1}
    sticky: {{header: x-user-id}}
    versions:
      - {{name: {v1}, url: "http://127.0.0.1:9101", weight: {w1}}}
      - {{name: {v2}, url: "http://127.0.0.1:9102", weight: {w2}}}
"""


def _shares(route: str, v1: str, v2: str) -> tuple[float, dict[str, str]]:
    cfg = parse_config_text("routes:" + _cfg(route, v1, v2))
    plan = build_table(cfg, StateDoc()).by_name[route]
    got = {u: plan.choose(u, None, random.random).target.name for u in USERS}
    return Counter(got.values())[v2] / len(USERS), got


def test_versions_sharing_a_16_byte_prefix_split_sticky_users_by_weight() -> None:
    share, _ = _shares("chat", "llama-3-8b-instruct-v1", "llama-3-8b-instruct-v2")
    assert abs(share - 0.10) < 0.01, share  # was 0.0: every user on the larger weight


def test_routes_sharing_a_16_byte_prefix_are_salted_apart() -> None:
    _, a = _shares("llama-3-8b-instruct-eu", "v1", "v2")
    _, b = _shares("llama-3-8b-instruct-us", "v1", "v2")
    both = sum(a[u] == "v2" and b[u] == "v2" for u in USERS) / len(USERS)
    assert abs(both - 0.01) < 0.005, both  # independent: 10% of 10%; was 10%


def test_short_names_keep_their_assignments() -> None:
    """Names of at most 16 bytes hash as before: users keep their version on upgrade."""
    assert bucket_score("iris", "v2", "alice", 10.0) == 0.20111035724472676
    assert bucket_score("a" * 16, "b" * 16, "carol", 3.0) == 0.20260731085801767
