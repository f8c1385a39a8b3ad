"""A worker's series snapshot as a file (`--workers N`): `Raw` to bytes and back.

Owns the snapshot's format (JSON, version 1: the worker's slot and pid, when it was
written on the host's monotonic clock, its values, request entries, last-minute answers,
other families and histogram boundaries) and reading it back strictly: anything that is
not a snapshot is a ValueError, never a half-read `Raw`. What the series are and how they
merge is groupseries.py's; the files themselves, workers.py's.
"""

from __future__ import annotations

import json
import os
import time

from gateway.config_telemetry import BucketsConfig
from gateway.telemetry.groupseries import Family, Raw

__all__ = ["decode", "encode"]


def encode(raw: Raw, slot: int) -> bytes:
    return json.dumps({
        "v": 1, "slot": slot, "pid": os.getpid(), "at": time.monotonic(),
        "values": [[n, names, [[labels, v] for labels, v in series.items()]]
                   for n, (names, series) in raw.values.items()],
        "entries": [[*key, *counts] for key, counts in raw.entries.items()],
        "split": [[r, v, n] for (r, v), n in raw.split.items()],
        "families": [[f.name, f.type, f.help, [[n, [list(kv) for kv in labels], v]
                                               for (n, labels), v in f.samples.items()]]
                     for f in raw.families.values()],
        "buckets": None if raw.buckets is None else raw.buckets.model_dump(mode="json"),
    }, separators=(",", ":")).encode()


def decode(data: bytes) -> tuple[float, Raw]:
    """(when it was written: time.monotonic(), the same clock for every process of the
    host; the series). Raises ValueError on anything that is not a snapshot."""
    try:
        doc = json.loads(data)
        if doc["v"] != 1:
            raise ValueError("unknown version")
        raw = Raw()
        for name, names, series in doc["values"]:
            raw.values[str(name)] = (tuple(map(str, names)), {
                tuple(map(str, labels)): float(v) for labels, v in series})
        for route, version, decision, stable, status, dur, up, ttfb in doc["entries"]:
            key = (str(route), str(version), str(decision), str(stable), int(status))
            raw.entries[key] = ([float(x) for x in dur], [float(x) for x in up],
                                [float(x) for x in ttfb])
        for route, version, n in doc["split"]:
            raw.split[(str(route), str(version))] = float(n)
        for name, type_, help_, samples in doc["families"]:
            raw.families[str(name)] = Family(str(name), str(type_), str(help_), {
                (str(n), tuple((str(k), str(v)) for k, v in labels)): float(value)
                for n, labels, value in samples})
        if doc.get("buckets") is not None:
            raw.buckets = BucketsConfig.model_validate(doc["buckets"])
        return float(doc["at"]), raw
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a worker metrics snapshot: {exc}") from None
