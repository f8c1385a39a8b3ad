"""The status document (admin/status.py) built from its views alone: no Gateway, no loop."""

from __future__ import annotations

from pathlib import Path

from gateway.admin.status import StatusBuilder
from gateway.configfile import load_config
from gateway.control.table import TableHolder
from gateway.domain.statedoc import KillFlag, StateDoc
from tests.conftest import two_versions, write_config


class Outcome:
    loaded_at = "2026-01-01T00:00:00.000Z"
    last_error = "routes[0].stable: names no version"
    last_problems = ["routes[0].stable: names no version"]
    last_attempt = "2026-01-01T00:01:00.000Z"
    restart_required = ["listen"]
    waiting = "open for writing by another process (since 2026-01-01T00:02:00.000Z)"
    warnings = ("route 'iris': version 'v1', held by a rollback ...",)


def test_document_from_views(tmp_path: Path) -> None:
    holder = TableHolder(load_config(write_config(tmp_path, two_versions(1, 2))))
    holder.apply_doc(StateDoc(generation=3, kills={"version:iris:v2": KillFlag(
        "version", "iris", "v2", "ops", "bad", "t", 3)}))
    doc = StatusBuilder("i-1", holder, health=lambda: {("iris", "v1"): {"healthy": True}},
                        analysis=lambda route: {"verdict": "passed"},
                        store=lambda: {"backend": "local", "connected": True},
                        reload=lambda: Outcome()).document()
    assert doc["instance"] == "i-1" and doc["generation"] == 3
    assert doc["store"] == {"backend": "local", "connected": True}
    assert doc["config"]["last_error"] == Outcome.last_error
    assert doc["config"]["restart_required"] == ["listen"]
    assert doc["config"]["waiting"] == Outcome.waiting  # a reload held back by a writer
    assert doc["config"]["warnings"] == list(Outcome.warnings)
    iris = doc["routes"]["iris"]
    assert iris["versions"]["v2"]["killed"] is True and iris["versions"]["v2"][
        "effective_weight"] == 0
    assert iris["versions"]["v1"]["health"] == {"healthy": True}
    assert iris["analysis"] == {"verdict": "passed"}
    assert [k["scope"] for k in doc["kills"]] == ["version"]


def test_document_while_parts_are_absent(tmp_path: Path) -> None:
    holder = TableHolder(load_config(write_config(tmp_path, two_versions(1, 2))))
    doc = StatusBuilder("i-1", holder).document()
    assert doc["store"] is None and doc["config"]["last_error"] is None
    assert doc["routes"]["iris"]["analysis"] is None
    assert "health" not in doc["routes"]["iris"]["versions"]["v1"]
