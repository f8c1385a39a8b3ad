"""Writes as values (admin/actions.py): validation against the config, the gate, the hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.admin import actions
from gateway.configfile import load_config
from gateway.domain.statedoc import StateDoc, apply_change
from gateway.errors import ApiError
from tests.conftest import two_versions, write_config


@pytest.fixture
def cfg(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_config(write_config(tmp_path, two_versions(1, 2))).config


def test_gates(cfg) -> None:  # type: ignore[no-untyped-def]
    def gate(action: str, body: dict, route: str | None = None) -> str | None:
        return actions.gate_of(actions.intent(action, body, route, cfg, "a", "r"))

    assert gate("kill", {"scope": "global"}) is None  # never gated
    assert gate("unkill", {"scope": "global"}) == "unkill_global"
    assert gate("unkill", {"scope": "version", "route": "iris", "version": "v2"}) == \
        "unkill_version"
    assert gate("promote", {"version": "v2"}, "iris") == "promote"


def test_the_hash_is_the_change_not_who_or_why(cfg) -> None:  # type: ignore[no-untyped-def]
    a = actions.intent("weights", {"weights": {"v1": 50, "v2": 50}}, "iris", cfg, "alice", "x")
    b = actions.intent("weights", {"weights": {"v2": 50, "v1": 50}}, "iris", cfg, "bob", "y")
    c = actions.intent("weights", {"weights": {"v1": 60, "v2": 40}}, "iris", cfg, "alice", "x")
    assert a.change_hash() == b.change_hash() != c.change_hash()
    assert len(a.change_hash()) == 64


@pytest.mark.parametrize(("action", "body", "route", "status"), [
    ("kill", {"scope": "route", "route": "nope"}, None, 404),
    ("kill", {"scope": "version", "route": "iris", "version": "v9"}, None, 404),
    ("kill", {"scope": "global", "route": "iris"}, None, 400),
    ("promote", {}, "iris", 400),
    ("rollback", {"to": 3}, "iris", 400),
    ("weights", {"weights": []}, "iris", 400),
    ("release", {}, "nope", 404),
])
def test_bad_intents(cfg, action: str, body: dict, route: str | None,  # type: ignore[no-untyped-def]
                     status: int) -> None:
    with pytest.raises(ApiError) as exc:
        actions.intent(action, body, route, cfg, "a", "r")
    assert exc.value.status == status


def test_a_plan_changes_the_document_and_describes_it(cfg) -> None:  # type: ignore[no-untyped-def]
    i = actions.intent("kill", {"scope": "route", "route": "iris"}, None, cfg, "alice", "bad",
                       "rid-1", "10.0.0.1").with_audit(break_glass=True)
    plan = actions.plan(i, cfg)
    cur = StateDoc(generation=4)
    change = plan.change(cur)
    assert change is not None
    new = apply_change(cur, change)
    assert set(new.kills) == {"route:iris"} and new.kills["route:iris"].actor == "alice"
    assert new.kills["route:iris"].generation == 5  # stamped where it lands
    assert plan.change(new) is None  # a repeat changes nothing
    ev = plan.describe(cur, new).as_event()
    assert (ev["actor"], ev["action"], ev["request_id"], ev["source"], ev["break_glass"]) == (
        "alice", "kill", "rid-1", "10.0.0.1", True)
    assert plan.answer == {"kill": "route:iris"}


def test_an_unkill_of_a_narrower_kill_names_the_wider_one_still_in_force(cfg) -> None:  # type: ignore[no-untyped-def]
    """`killgate unkill --route iris` under a global kill answered only 'there is no route
    kill for that selector', which README calls 'it is lifted': a tired operator took the
    route for served while the global kill still stopped it. The refusal names the kill
    that still covers the selector."""
    from gateway.errors import ConflictingState

    def doc_with(*bodies: dict) -> StateDoc:
        cur = StateDoc(generation=1)
        for body in bodies:
            ch = actions.plan(actions.intent("kill", body, None, cfg, "alice", "outage"),
                              cfg).change(cur)
            assert ch is not None
            cur = apply_change(cur, ch)
        return cur

    def refusal(cur: StateDoc, body: dict) -> str:
        plan = actions.plan(actions.intent("unkill", body, None, cfg, "bob", "r"), cfg)
        with pytest.raises(ConflictingState) as exc:
            plan.change(cur)
        assert exc.value.type == "not_killed"
        return exc.value.message

    glob = doc_with({"scope": "global"})
    said = refusal(glob, {"scope": "route", "route": "iris"})
    assert "global kill" in said and "still" in said and "alice" in said, said
    said = refusal(doc_with({"scope": "route", "route": "iris"}),
                   {"scope": "version", "route": "iris", "version": "v2"})
    assert "route:iris kill" in said and "still" in said, said
    # nothing wider in force: as before
    said = refusal(StateDoc(generation=1), {"scope": "route", "route": "iris"})
    assert said == "there is no route kill for that selector", said
    # narrower kills under it (revnewuser5: `kill --route iris --version v2`, then
    # `unkill --route iris`, said only the line above): named, with the command that lifts
    ver = doc_with({"scope": "version", "route": "iris", "version": "v2"})
    said = refusal(ver, {"scope": "route", "route": "iris"})
    assert said == ("there is no route kill for that selector; narrower kills are in force "
                    "under it: version:iris:v2; a kill is lifted by the scope it was made "
                    "with (killgate unkill --route iris --version v2)"), said
    said = refusal(doc_with({"scope": "route", "route": "iris"}), {"scope": "global"})
    assert said.endswith("in force under it: route:iris; a kill is lifted by the scope it "
                         "was made with (killgate unkill --route iris)"), said
    assert refusal(ver, {"scope": "version", "route": "iris", "version": "v1"}) == (
        "there is no version kill for that selector")
