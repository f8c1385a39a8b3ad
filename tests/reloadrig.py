"""One `killgate serve` started on config A with the change B beside it: the set-up of the
reload-audit tests that reload a real process (a restart, a crash, a claim's wait).

`serve_a(tmp_path, p1, p2, state, gateway_procs, b_weights)`: A routes iris to v1 (100) and
v2 (0), B with `b_weights` (default v1 90, v2 10); both on the same free ports, the process
ready on `killgate.yaml` (mode 0600) holding A; copy B over it and reload.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.configfile import load_config
from tests.conftest import free_port, write_config
from tests.test_kill_after_routing_reload import _route


@dataclass(frozen=True)
class ServedA:
    proc: Any  # (conftest's gateway process)
    cfg: Path  # the file it serves: A, until B is copied over it
    a: Path
    b: Path
    da: str  # the two configs' digests
    db: str


async def serve_a(tmp_path: Path, p1: int, p2: int, state: str, gateway_procs: Any,
                  b_weights: dict[str, int] | None = None) -> ServedA:
    ports = {"listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"}
    where = {"v1": p1, "v2": p2}
    weights = b_weights or {"v1": 90, "v2": 10}
    a = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}),
                     state=state, name="a.yaml", **ports)
    b = write_config(tmp_path, _route("iris", {v: (where[v], w) for v, w in weights.items()}),
                     state=state, name="b.yaml", **ports)
    cfg = tmp_path / "killgate.yaml"
    cfg.write_bytes(a.read_bytes())
    cfg.chmod(0o600)
    proc = gateway_procs(cfg)
    await asyncio.to_thread(proc.wait_ready)
    return ServedA(proc, cfg, a, b, load_config(a).digest, load_config(b).digest)
