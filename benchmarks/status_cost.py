"""What GET /v1/status costs the admin loop (which the data plane shares) at R routes,
built per call (before) and answered from the parts kept per (table, second)
(admin/statusparts.py), side by side in one process.

R routes of 2 versions each, every version with a health record, a tenth of the routes
(--canaries) under canary analysis whose evidence changes every second (the console's case).

    .venv/bin/python benchmarks/status_cost.py [--routes 1000] [--canaries 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import redact
from gateway.admin.etag import etag_of
from gateway.admin.status import StatusBuilder, stable
from gateway.admin.statusparts import StatusParts
from gateway.config import Config
from gateway.configfile import LoadedConfig
from gateway.control.table import TableHolder
from gateway.domain.statedoc import KillFlag, StateDoc

ROUTE = """\
listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0", auth: {hs256_secret_env: KILLGATE_BENCH_SECRET}}
state: {backend: local, path: %(tmp)s/store.json}
routes:
  - name: r0
    match: {path_prefix: /m/r0}
    stable: v1
    versions:
      - {name: v1, url: "http://127.0.0.1:9001", weight: 90}
      - {name: v2, url: "http://127.0.0.1:9002", weight: 10}
"""


def holder(n: int, tmp: Path) -> TableHolder:
    path = tmp / "killgate.yaml"
    path.write_text(ROUTE % {"tmp": tmp})
    data = yaml.safe_load(path.read_text())
    one = data["routes"][0]
    data["routes"] = [{**one, "name": f"r{i}", "match": {"path_prefix": f"/m/r{i}"}}
                      for i in range(n)]
    return TableHolder(LoadedConfig(Config.model_validate(data), "sha256:bench", path))


class Views:
    """Health records (new dicts every call, as control/probes.py answers) and canary
    analysis whose evidence moves on with `tick` (as control/rollout.py's does)."""

    def __init__(self, routes: int, canaries: int) -> None:
        self.keys = [(f"r{i}", v) for i in range(routes) for v in ("v1", "v2")]
        self.canaries = {f"r{i}" for i in range(canaries)}
        self.n = 0

    def health(self) -> dict[tuple[str, str], dict[str, object]]:
        return {k: {"healthy": True, "probe_healthy": True, "ejected_for_s": 0.0,
                    "ejections": 0, "last_probe_error": None} for k in self.keys}

    def analysis(self, route: str) -> dict[str, Any] | None:
        if route not in self.canaries:
            return None
        side = {"requests": 500 + self.n, "errors": 2, "error_rate": 0.004, "p99_ms": 41.0}
        return {"verdict": "passed", "reasons": ["within every threshold"],
                "evidence": {"canary": side, "stable": side, "window_s": 60,
                             "min_requests": 50},
                "recent": [{"time": "2026-12-06T04:00:00Z", "verdict": "passed",
                            "reasons": ["within every threshold"]}] * 10}


def ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=1000)
    ap.add_argument("--canaries", type=int, default=100)
    ap.add_argument("--calls", type=int, default=5)
    a = ap.parse_args()
    h = holder(a.routes, Path(tempfile.mkdtemp()))
    views = Views(a.routes, a.canaries)
    b = StatusBuilder("bench", h, health=views.health, analysis=views.analysis,
                      store=lambda: {"backend": "local", "connected": True, "stale": False,
                                     "staleness_ms": 2})
    clock = [1000.0]
    parts = StatusParts(b, clock=lambda: clock[0])

    def before() -> bytes:  # the handler's work before: build, redact, serialise, hash
        doc = b.document()
        doc["instances"] = []
        body = json.dumps(redact.tree(stable(doc))).encode()
        etag_of(body)
        return body

    def after(fields: str = "stable", only: list[str] | None = None) -> bytes:
        body = parts.body(fields, [], only)
        etag_of(body)
        return body

    def next_second() -> None:
        clock[0] += 1
        views.n += 1
        after()

    def new_table() -> None:
        g = h.doc.generation + 1
        h.apply_doc(StateDoc(generation=g, kills={"route:r1": KillFlag(
            "route", "r1", None, "ops", "bench", "t", g)}))
        after()

    old = ms(before, a.calls)
    cold = ms(lambda: (setattr(parts, "_built", None), after()), a.calls)
    same = ms(after, a.calls * 4)
    second = ms(next_second, a.calls)
    swap = ms(new_table, a.calls)
    changed = [f"r{i}" for i in range(a.canaries)]
    print(f"## GET /v1/status at {a.routes} routes, {a.canaries} under canary analysis "
          f"(median of {a.calls}+ calls; ms of the admin loop per call)")
    print("| call | ms | vs built per call | answer |")
    print("|---|---|---|---|")
    rows = [("built per call (before): ?fields=stable", old, len(before())),
            ("parts built from nothing (first call)", cold, len(after())),
            ("again in the same second (several consoles)", same, len(after())),
            ("the next second, the canaries' evidence changed", second, len(after())),
            ("after a kill (a new table: every part built)", swap, len(after())),
            ("?fields=index (route -> tag)", ms(lambda: after("index"), a.calls * 4),
             len(after("index"))),
            (f"?fields=stable&routes= the {a.canaries} canaries", ms(
                lambda: after("stable", changed), a.calls * 4), len(after("stable", changed)))]
    for name, t, size in rows:
        print(f"| {name} | {t:.1f} | {t / old:.2f}x | {size / 1024:.0f} KiB |")


if __name__ == "__main__":
    main()
