"""The shadow tests' rig: a gated shadow route, instances' tallies, a real local store.

`CFG`: route iris, stable v1 (protocol v2), its shadow v2 gated at 75% of at least 4
compared; `Local`: one instance's tallies, as the mirror keeps them; `tally`: counts of
agreed and disagreed copies (each disagreement kept); `local_rig`: CFG parsed, its route,
the comparison spec, and an opened LocalStore in the test's directory.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import Config, RouteConfig
from gateway.configfile import parse_config_text
from gateway.domain.comparison import Difference
from gateway.domain.shadowstats import Tally
from gateway.domain.verdict import spec_for
from gateway.state.local import LocalStore

__all__ = ["CFG", "Local", "local_rig", "tally"]

CFG = """
routes:
  - name: iris
    match: {path_prefix: /v2/models/iris}
    stable: v1
    protocol: v2
    shadow: {version: v2, sample: 1.0}
    analysis: {min_shadow_agreement: 0.75, min_shadow_compared: 4}
    versions:
      - {name: v1, url: "http://127.0.0.1:9101", weight: 100}
      - {name: v2, url: "http://127.0.0.1:9102", weight: 0}
"""


class Local:
    """One instance's tallies (what the mirror keeps)."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}


def tally(spec: str, agreed: int, disagreed: int, version: str = "v2") -> Tally:
    t = Tally(version, spec)
    for _ in range(agreed):
        t.outcome("agreed", (), 0.01, 0.02, {})
    for i in range(disagreed):
        t.outcome("disagreed", (Difference("values", "outputs[probs]"),), 0.01, 0.02, {})
        t.disagreement({"time": f"2030-01-01T00:00:0{i}Z", "request": i, "primary": {},
                        "shadow": {}})
    t.copy("sent", agreed + disagreed)
    return t


async def local_rig(tmp_path: Path) -> tuple[Config, RouteConfig, str, LocalStore]:
    """CFG parsed, its route, the spec its shadow compares by, an opened LocalStore."""
    cfg = parse_config_text(CFG)
    rc = cfg.routes[0]
    assert rc.shadow is not None
    store = LocalStore(tmp_path / "store.json")
    await store.open()
    return cfg, rc, spec_for(rc), store
