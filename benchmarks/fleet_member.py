"""Many lightweight killgate instances in one process, for benchmarks/fleet.py.

Each instance is the real state machinery of a gateway process: its own `TableHolder`, its
own `Sync` over its own `RedisStore` (three Redis connections: commands, writes, the
subscription), the real poll loop, heartbeats and acks, its own snapshot file. What is left
out is the data plane and the admin API (no listener, no probes). Every table swap is
recorded with its wall-clock time; on SIGTERM the instances leave the fleet and the records
go to OUT as JSON lines ({"i": instance, "gen": generation, "t": unix time}).

    fleet_member.py CONFIG --count K --name host0 --workdir DIR --out OUT
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.configfile import LoadedConfig, load_config
from gateway.control.table import TableHolder
from gateway.domain.routetable import RouteTable
from gateway.state import make_sync
from gateway.state.sync import Sync
from gateway.telemetry.metrics import Metrics


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _instance_config(loaded: LoadedConfig, snapshot: Path) -> LoadedConfig:
    """The same config with this instance's own snapshot file."""
    cfg = loaded.config
    state = cfg.state.model_copy(update={"snapshot_path": str(snapshot)})
    return LoadedConfig(cfg.model_copy(update={"state": state}), loaded.digest, loaded.path)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    loaded = load_config(args.config)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before anything runs
    applies: list[tuple[str, int, float]] = []
    syncs: list[Sync] = []
    rss_before = rss_kib()

    async def one(i: int) -> Sync:
        name = f"{args.name}-{i}"
        holder = TableHolder(_instance_config(loaded, work / f"{name}.json"))

        def swapped(old: RouteTable, new: RouteTable, name: str = name) -> None:
            applies.append((name, new.doc.generation, time.time()))

        holder.listen(swapped)
        sync = make_sync(holder.loaded, holder, Metrics(), name)
        await sync.start()
        return sync

    for start in range(0, args.count, 20):  # connect in batches, as a rollout would
        syncs += await asyncio.gather(*(one(i) for i in range(start, min(start + 20, args.count))))
    connected = sum(1 for s in syncs if s.connected)
    print(json.dumps({"ready": len(syncs), "connected": connected,
                      "rss_before_kib": rss_before, "rss_after_kib": rss_kib()}), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await asyncio.gather(*(s.stop() for s in syncs), return_exceptions=True)
    _dump(applies, args.out)


def _dump(applies: list[tuple[str, int, float]], out: str) -> None:
    with open(out + ".tmp", "w") as f:
        for name, gen, t in applies:
            f.write(json.dumps({"i": name, "gen": gen, "t": t}) + "\n")
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
