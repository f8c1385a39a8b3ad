"""A config file the running instances refuse is seen by monitoring (deploy review 3).

On Kubernetes a ConfigMap edit reaches every pod and is hot-reloaded; a file the pods refuse
leaves them on the old config (the change did not happen) and makes every pod that starts
from now on refuse to start (a restart, a node drain, a scale-up: the fleet shrinks pod by
pod). Only a log line said so: `killgate_config_reload_rejected_total` first appeared at 1,
which `increase()` never counts, and nothing shipped watched it. `killgate_config_refused`
is 1 while the file is refused, and the shipped KillgateConfigRefused pages on it.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.backends import echo_app
from tests.conftest import GatewayProcess, free_port, two_versions, wait_until, write_config


def _series(admin: str) -> dict[str, float]:
    with urllib.request.urlopen(admin + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name.startswith("killgate_config_")}


async def test_a_refused_config_file_shows_until_a_good_one_loads(
        tmp_path: Path, backends: Any, gateway_procs: Callable[..., GatewayProcess]) -> None:
    p = await backends(echo_app("v1"))
    good = two_versions(p, p, 90, 10)
    cfg = write_config(tmp_path, good, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    try:
        first = await asyncio.to_thread(_series, gw.admin)
        # there from the start, at 0: the first refusal is an increase Prometheus sees
        assert first.get("killgate_config_refused") == 0, first
        assert first.get("killgate_config_reload_rejected_total") == 0, first

        text = cfg.read_text()
        cfg.write_text(text.replace("weight: 10}", "weight: -1}"))  # refused

        async def refused() -> bool:
            s = await asyncio.to_thread(_series, gw.admin)
            return s.get("killgate_config_refused") == 1

        await wait_until(refused, 15, 0.1, "the refused file on /metrics")
        s = await asyncio.to_thread(_series, gw.admin)
        assert s["killgate_config_reload_rejected_total"] >= 1, s

        cfg.write_text(text.replace("weight: 10}", "weight: 20}"))  # a good one again

        async def cleared() -> bool:
            s = await asyncio.to_thread(_series, gw.admin)
            return s.get("killgate_config_refused") == 0

        await wait_until(cleared, 15, 0.1, "the refusal cleared")
        assert (await asyncio.to_thread(_series, gw.admin))["killgate_config_reloads_total"] == 1
    finally:
        assert gw.stop() == 0, gw.output()
