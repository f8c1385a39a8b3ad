"""What each worker of a `serve --workers N` group runs, for its siblings to tell a drill.

Owns one small file per worker slot in the group's private run directory (`state-<slot>.json`:
the worker's fleet name, its pid and the state generation it runs; written whole, then
renamed, whenever that generation moves on: `changed`, told by the routing table's swap,
writes it on the loop, off the request path) and reading the siblings' back (`siblings`:
those whose process still runs, read at most every FRESH seconds).

Why: a drill asks each instance it started with after its restore (control/drillbehind.py).
The N workers of a group share one admin address (the kernel hands each connection to one
of them), so hearing each as itself took N·H(N) asks: a group of 90 workers spent the
drill's 1024 asks in all, and its workers were left `unasked`, the drill failed. Now the
worker a drill's question reaches answers for its siblings too, each with its own proof
(admin/readyz.py): one ask a group. A sibling's generation read here may lag its own by a
moment (the write follows its swap): an older one reads as "behind", which the drill asks
again within its catch-up time; a generation never goes back, so "applied" is never early.
The directory is the supervisor's (0700, this user's only: rundir.py). Imports only the
standard library.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["FRESH", "MAX_SIBLINGS", "WorkerStates"]

#: seconds a read of the siblings' files is answered from (a flood of drill questions,
#: which need no token, reads the directory at most this often)
FRESH = 0.1
#: the most siblings told of (a group is one host's cores)
MAX_SIBLINGS = 1024
PREFIX, SUFFIX = "state-", ".json"


class WorkerStates:
    """One worker's file, and its siblings' as read back."""

    def __init__(self, run_dir: Path, slot: int, instance: str,
                 generation: Callable[[], int]) -> None:
        self.dir = run_dir
        self.slot = slot
        self.instance = instance
        self.generation = generation
        self.path = run_dir / f"{PREFIX}{slot}{SUFFIX}"
        self.written: int | None = None  # the generation the file holds
        self._due = False  # a write is scheduled on the loop
        self._read: tuple[float, list[tuple[str, int]]] | None = None  # (when, siblings)

    def start(self) -> None:
        self.write()

    def changed(self, *_: object) -> None:
        """The table swapped (a routing table listener): the file written on the loop once
        the generation moved on (one int compared here: a health change swaps too)."""
        if not self._due and self.generation() != self.written:
            self._due = True
            try:
                asyncio.get_running_loop().call_soon(self.write)
            except RuntimeError:  # (no loop runs: written now)
                self.write()

    def write(self) -> None:
        self._due = False
        gen = self.generation()
        tmp = self.dir / f".{PREFIX}{self.slot}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps({"instance": self.instance, "pid": os.getpid(),
                                       "generation": gen}))
            os.replace(tmp, self.path)
            self.written = gen
        except OSError:
            pass  # (the drill then asks this worker itself, as before)

    def stop(self) -> None:
        """A worker that stops takes its file with it (a sibling tells no drill of it)."""
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    def siblings(self) -> list[tuple[str, int]]:
        """(fleet name, generation) of each sibling whose process runs, sorted."""
        now = time.monotonic()
        if self._read is not None and now - self._read[0] < FRESH:
            return self._read[1]
        found: list[tuple[str, int]] = []
        try:
            names = sorted(os.listdir(self.dir))
        except OSError:
            names = []
        for name in names:
            if not (name.startswith(PREFIX) and name.endswith(SUFFIX)) \
                    or name == self.path.name or len(found) >= MAX_SIBLINGS:
                continue
            one = _read(self.dir / name)
            if one is not None:
                found.append(one)
        self._read = (now, found)
        return found


def _read(path: Path) -> tuple[str, int] | None:
    try:
        doc = json.loads(path.read_bytes()[:4096])
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    name, pid, gen = doc.get("instance"), doc.get("pid"), doc.get("generation")
    if not isinstance(name, str) or not isinstance(pid, int) or isinstance(pid, bool) \
            or not isinstance(gen, int) or isinstance(gen, bool) or pid <= 0 or gen < 0:
        return None
    try:
        os.kill(pid, 0)  # (its process gone: a worker that died, replaced in its slot soon)
    except ProcessLookupError:
        return None
    except PermissionError:
        return None  # (another user's process now holds that pid: not ours)
    return name, gen
