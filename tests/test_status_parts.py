"""GET /v1/status's parts kept per (routing table, second) (admin/statusparts.py), built
from a real TableHolder with 1,000 routes: a repeated call costs a fraction of a build, a
state change (a kill) is in the very next answer, and a new second's evidence rebuilds
only the routes whose analysis changed."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import redact
from gateway.admin.status import StatusBuilder, stable
from gateway.admin.statusparts import StatusParts
from gateway.config import Config
from gateway.configfile import LoadedConfig
from gateway.control.table import TableHolder
from gateway.domain.statedoc import KillFlag, StateDoc
from tests.conftest import two_versions, write_config

pytestmark = pytest.mark.timeout(60)

N = 1000


def _holder(tmp: Path, n: int = N) -> TableHolder:
    """n routes r0..r{n-1} of two versions each (the file holds one: YAML is slow to read,
    the rest are copies validated as the schema validates a file's)."""
    path = write_config(tmp, two_versions(1, 2, name="r0", prefix="/m/r0"))
    data = yaml.safe_load(path.read_text())
    one = data["routes"][0]
    data["routes"] = [{**one, "name": f"r{i}", "match": {"path_prefix": f"/m/r{i}"}}
                      for i in range(n)]
    return TableHolder(LoadedConfig(Config.model_validate(data), "sha256:test", path))


class Analysis:
    """Canary analysis of some routes: evidence that changes when `tick` is called."""

    def __init__(self, routes: set[str]) -> None:
        self.routes = routes
        self.n = 0

    def __call__(self, route: str) -> dict[str, Any] | None:
        if route not in self.routes:
            return None
        return {"verdict": "passed", "reasons": ["within every threshold"],
                "evidence": {"canary": {"requests": 100 + self.n, "errors": 1},
                             "stable": {"requests": 900 + self.n, "errors": 2}}}


def _builder(holder: TableHolder, analysis: Callable[[str], Any]) -> StatusBuilder:
    return StatusBuilder("i-1", holder, analysis=analysis,
                         store=lambda: {"backend": "local", "connected": True,
                                        "staleness_ms": 3, "stale": False})


def _old_answer(b: StatusBuilder) -> bytes:
    """What GET /v1/status?fields=stable did per call before the parts were kept."""
    doc = b.document()
    doc["instances"] = []
    return json.dumps(redact.tree(stable(doc))).encode()


def _ms(fn: Callable[[], object], n: int = 3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def test_a_repeated_call_costs_a_fraction_of_a_build(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    b = _builder(holder, Analysis({"r1", "r2"}))
    parts = StatusParts(b, clock=lambda: 100.0)
    assert json.loads(parts.body("stable", [])) == json.loads(_old_answer(b))  # the same document
    before = _ms(lambda: _old_answer(b))
    after = _ms(lambda: parts.body("stable", []), 5)
    print(f"1000 routes, GET /v1/status?fields=stable: {before:.1f} ms built per call, "
          f"{after:.1f} ms from the kept parts")
    assert parts.builds == 1
    assert after < before / 4, (before, after)  # (~30x on a quiet machine)


def test_a_kill_is_in_the_next_answer_and_changes_only_its_routes_tag(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 50)
    parts = StatusParts(_builder(holder, Analysis(set())), clock=lambda: 100.0)  # (one second)
    tags = json.loads(parts.body("index", []))["route_etags"]
    holder.apply_doc(StateDoc(generation=2, kills={"route:r7": KillFlag(
        "route", "r7", None, "ops", "bad", "t", 2)}))
    doc = json.loads(parts.body("stable", []))
    assert doc["generation"] == 2 and doc["routes"]["r7"]["killed"] == "route"
    now = json.loads(parts.body("index", []))["route_etags"]
    assert [n for n in tags if tags[n] != now[n]] == ["r7"]
    assert [k["route"] for k in json.loads(parts.body("index", []))["kills"]] == ["r7"]


def test_a_new_second_rebuilds_only_the_routes_whose_evidence_changed(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 50)
    analysis = Analysis({"r3"})
    clock = [100.0]
    parts = StatusParts(_builder(holder, analysis), clock=lambda: clock[0])
    first = parts.parts().routes
    analysis.n = 1  # (the analysis loop's next verdict)
    assert json.loads(parts.body("stable", []))["routes"]["r3"]["analysis"]["evidence"][
        "canary"]["requests"] == 100  # (the same second: at most a second old)
    clock[0] = 101.0
    assert json.loads(parts.body("stable", []))["routes"]["r3"]["analysis"]["evidence"][
        "canary"]["requests"] == 101
    again = parts.parts().routes
    assert [n for n in first if first[n] is not again[n]] == ["r3"]
    assert [n for n in first if first[n].tag != again[n].tag] == ["r3"]
