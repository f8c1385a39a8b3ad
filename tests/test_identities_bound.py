"""The state document's version identities are bounded per route (domain/statedoc.py
MAX_IDENTITIES): found by review (revmerge16): one name per build grew the document with
every deploy, for ever, towards MAX_DOC_BYTES, where no instance can read the state (its
kills included); /v1/status `identities` grew with it. Pure."""

from __future__ import annotations

from gateway.configfile import parse_config_text
from gateway.domain.configrecord import identity_problems, record_config
from gateway.domain.statedoc import (
    MAX_IDENTITIES,
    MAX_IDENTITIES_ALL,
    Change,
    StateDoc,
    apply_change,
)
from gateway.domain.stateparts import HistoryEntry


def _seen(i: int) -> dict[str, dict[str, object]]:
    return {f"b{i:05d}": {"url": f"http://10.0.0.1:{9000 + i % 1000}",
                          "artifact": f"sha256:{i:064x}",
                          "time": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}}


def test_the_oldest_identities_of_a_route_go_past_the_bound() -> None:
    doc = StateDoc()
    for i in range(MAX_IDENTITIES + 5):
        doc = apply_change(doc, Change(identities={"iris": _seen(i)}))
    known = doc.identities["iris"]
    assert len(known) == MAX_IDENTITIES
    assert "b00000" not in known and "b00004" not in known and "b00005" in known
    assert f"b{MAX_IDENTITIES + 4:05d}" in known
    # the order a stored document's keys come back in does not matter: by the time recorded
    doc = StateDoc.from_json(doc.to_json())
    doc = apply_change(doc, Change(identities={"iris": _seen(MAX_IDENTITIES + 5)}))
    assert "b00005" not in doc.identities["iris"] and len(doc.identities["iris"]) == \
        MAX_IDENTITIES


def _removed_routes(n: int, per: int) -> dict[str, dict[str, dict[str, object]]]:
    """`n` routes of `per` identities each, recorded in 2026-02 (after iris's, below)."""
    return {f"pr-{r:04d}": {f"v{i}": {"url": "http://10.0.0.2:9000",
                                      "artifact": f"sha256:{r * per + i:064x}",
                                      "time": f"2026-02-{1 + r // 1440:02d}T{r // 60 % 24:02d}:"
                                              f"{r % 60:02d}:{i:02d}Z"}
                            for i in range(per)} for r in range(n)}


def test_identities_of_removed_routes_are_bounded_oldest_first() -> None:
    """A route no file names any more (a preview route per pull request) kept its
    identities for ever: past MAX_IDENTITIES_ALL in all, the oldest recorded go, those of
    routes the recording file does not name first, however old the named route's are."""
    per = 8
    doc = StateDoc(identities={**_removed_routes(MAX_IDENTITIES_ALL // per, per),
                               "iris": {"v1": {"url": "http://10.0.0.1:9000",
                                               "artifact": "sha256:" + "a" * 64,
                                               "time": "2026-01-01T00:00:00Z"}}})
    doc = StateDoc.from_json(doc.to_json())  # (as stored: its keys come back sorted)
    doc = apply_change(doc, Change(identities={"iris": {"v2": {
        "url": "http://10.0.0.1:9001", "artifact": "sha256:" + "b" * 64,
        "time": "2026-03-01T00:00:00Z"}}}, named=frozenset({"iris"})))
    assert sum(len(vs) for vs in doc.identities.values()) == MAX_IDENTITIES_ALL
    assert set(doc.identities["iris"]) == {"v1", "v2"}  # named: kept, old as v1 is
    # the two oldest of the removed routes' went: pr-0000's v0 and v1 (seconds 0 and 1)
    assert "v0" not in doc.identities["pr-0000"] and "v1" not in doc.identities["pr-0000"]
    assert "v2" in doc.identities["pr-0000"] and len(doc.identities["pr-0001"]) == per


def test_a_removed_route_left_without_identities_goes_and_nothing_else_is_touched() -> None:
    doc = StateDoc(identities=_removed_routes(MAX_IDENTITIES_ALL // 2, 2))
    before = doc.to_json()
    # a change recording nothing new leaves them (under the bound: nothing to drop)
    doc = apply_change(doc, Change(history={}))
    assert doc.identities == StateDoc.from_json(before).identities
    doc = apply_change(doc, Change(identities=_removed_routes(1, 4)))
    # pr-0000 now has 4 (v2, v3 new), 2 over: its own oldest two go (seconds 0 and 1), and a
    # route left with none would go whole
    assert sum(len(vs) for vs in doc.identities.values()) == MAX_IDENTITIES_ALL
    assert set(doc.identities["pr-0000"]) == {"v2", "v3"}


def test_the_reload_record_names_its_files_routes() -> None:
    """record_config's change carries the file's routes, so theirs are kept longest."""
    cfg = parse_config_text("""
listen: 127.0.0.1:8080
admin: {listen: 127.0.0.1:9901}
state: {backend: local, path: /tmp/x.json}
routes:
  - name: iris
    match: {path_prefix: /}
    stable: v1
    versions:
      - {name: v1, url: "http://10.0.0.1:9000"}
""")
    change = record_config(StateDoc(), list(cfg.routes), "sha256:one", "t0")
    assert change is not None and change.named == frozenset({"iris"})


def test_a_route_left_with_no_identity_is_dropped_whole() -> None:
    doc = StateDoc(identities={"gone": {"v1": {"url": "http://10.0.0.3:9000",
                                                "artifact": "", "time": "2025-01-01T00:00:00Z"}},
                               **_removed_routes(MAX_IDENTITIES_ALL // 2, 2)})
    doc = apply_change(doc, Change(identities={"iris": {"v1": {
        "url": "http://10.0.0.1:9000", "artifact": "", "time": "2026-03-01T00:00:00Z"}}},
        named=frozenset({"iris"})))
    assert "gone" not in doc.identities and "iris" in doc.identities
    assert sum(len(vs) for vs in doc.identities.values()) == MAX_IDENTITIES_ALL


def test_a_live_versions_identity_outlives_newer_ones_of_retired_versions() -> None:
    """Review of the impleft6 merge: past MAX_IDENTITIES_ALL the oldest recorded went, of
    the file's routes too; the oldest is often a route's live stable, recorded once long
    ago while another route's builds came and went. Dropped, its name would take another
    artifact without a word (CONTRACT §2: a version name is immutable). The versions the
    recording file serves now go last, in both bounds."""
    iris_v1 = "sha256:" + "a" * 64
    routes = "\n".join(f"""  - name: r{r}
    match: {{path_prefix: /r{r}}}
    stable: new
    versions:
      - {{name: new, url: "http://10.0.0.2:9000", artifact: "sha256:{r + 1:064x}"}}"""
                       for r in range(4))
    text = f"""
listen: 127.0.0.1:8080
admin: {{listen: 127.0.0.1:9901}}
state: {{backend: local, path: /tmp/x.json}}
routes:
  - name: iris
    match: {{path_prefix: /iris}}
    stable: v1
    versions:
      - {{name: v1, url: "http://10.0.0.1:9000", artifact: "{iris_v1}"}}
{routes}
"""
    builds = {f"r{r}": {f"b{i:04d}": {"url": "http://10.0.0.2:9000",
                                      "artifact": f"sha256:{r * 10000 + i:064x}",
                                      "time": f"2026-02-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"}
                        for i in range(MAX_IDENTITIES - (r == 0))} for r in range(4)}
    doc = StateDoc(identities={"iris": {"v1": {"url": "http://10.0.0.1:9000",
                                                "artifact": iris_v1,
                                                "time": "2026-01-01T00:00:00Z"}}, **builds})
    change = record_config(doc, list(parse_config_text(text).routes), "sha256:one",
                           "2026-03-01T00:00:00Z")
    assert change is not None
    doc = apply_change(doc, change)
    assert sum(len(vs) for vs in doc.identities.values()) == MAX_IDENTITIES_ALL
    assert doc.identities["iris"]["v1"]["artifact"] == iris_v1
    assert all("new" in doc.identities[f"r{r}"] for r in range(4))
    # so a file giving iris's v1 another artifact is still refused
    assert identity_problems(doc, list(parse_config_text(
        text.replace(iris_v1, "sha256:" + "e" * 64)).routes))


def test_a_live_stable_outlives_a_thousand_newer_builds_of_its_route() -> None:
    """The per-route bound too: a route whose stable was recorded before MAX_IDENTITIES
    canary builds came and went kept the newest only, the live stable's name freed."""
    stable = "sha256:" + "a" * 64
    text = f"""
listen: 127.0.0.1:8080
admin: {{listen: 127.0.0.1:9901}}
state: {{backend: local, path: /tmp/x.json}}
routes:
  - name: iris
    match: {{path_prefix: /}}
    stable: v1
    versions:
      - {{name: v1, url: "http://10.0.0.1:9000", artifact: "{stable}"}}
      - {{name: next, url: "http://10.0.0.1:9001", artifact: "sha256:{"b" * 64}"}}
"""
    builds = {f"b{i:04d}": {"url": "http://10.0.0.2:9000", "artifact": f"sha256:{i:064x}",
                            "time": f"2026-02-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"}
              for i in range(MAX_IDENTITIES - 1)}
    doc = StateDoc(identities={"iris": {"v1": {"url": "http://10.0.0.1:9000",
                                                "artifact": stable,
                                                "time": "2026-01-01T00:00:00Z"}, **builds}})
    change = record_config(doc, list(parse_config_text(text).routes), "sha256:one",
                           "2026-03-01T00:00:00Z")
    assert change is not None
    doc = apply_change(doc, change)
    assert len(doc.identities["iris"]) == MAX_IDENTITIES
    assert doc.identities["iris"]["v1"]["artifact"] == stable and "b0000" not in \
        doc.identities["iris"]
    assert identity_problems(doc, list(parse_config_text(
        text.replace(stable, "sha256:" + "e" * 64)).routes))


def test_another_files_live_stable_outlives_this_files_record_mid_deploy() -> None:
    """Mid-deploy (or an instance rolled back to an older file), an instance whose file
    lacks route `fresh` records at the bound: the routes its file does not name went
    first, oldest first, `fresh`'s live stable (in the history, served by the other
    instances) with them, and an instance restarted with `fresh`'s v1 under another
    artifact was accepted. The state's stables (and latched versions) now go last with the
    file's versions."""
    fresh = "sha256:" + "f" * 64
    per = 8
    doc = StateDoc(identities={**_removed_routes(MAX_IDENTITIES_ALL // per - 1, per),
                               "fresh": {"v1": {"url": "http://10.0.0.9:9000",
                                                "artifact": fresh,
                                                "time": "2025-12-01T00:00:00Z"}}},
                   history={"fresh": (HistoryEntry("v1", "2025-12-01T00:00:00Z",
                                                   "killgate/config", "config x"),)})
    pad = MAX_IDENTITIES_ALL - sum(len(vs) for vs in doc.identities.values())
    doc = apply_change(doc, Change(identities={"old": {f"p{i}": {
        "url": "http://10.0.0.1:9000", "artifact": "", "time": "2026-05-01T00:00:00Z"}
        for i in range(pad + 1)}}, named=frozenset({"old"}),
        serving=frozenset({("old", "p0")})))
    assert sum(len(vs) for vs in doc.identities.values()) == MAX_IDENTITIES_ALL
    assert doc.identities["fresh"]["v1"]["artifact"] == fresh
