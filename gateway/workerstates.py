"""What each worker of a `serve --workers N` group runs, for its siblings to tell a drill.

Owns one small file per worker slot in the group's private run directory (`state-<slot>.json`:
the worker's fleet name, its pid and the state generation it runs; written whole, then
renamed, whenever that generation moves on: `changed`, told by the routing table's swap,
writes it on the loop, off the request path) and reading the siblings' back (`siblings`:
those whose process still runs (not a zombie, of the start and boot its file names:
procstart.py), read at most every FRESH seconds; those whose process is
gone, and the earlier workers of each slot, which a worker replacing one names, told as GONE).

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

from gateway import procstart

__all__ = ["FRESH", "GONE", "MAX_SIBLINGS", "WorkerStates"]

#: seconds a read of the siblings' files is answered from (a flood of drill questions,
#: which need no token, reads the directory at most this often)
FRESH = 0.1
#: and at least this many times the last read's own time (a read of a large group's files,
#: ~90 µs each on a loaded host, on the loop the data plane shares: kept to ~10 % of it
#: under a flood of questions, where reads every FRESH took 88 % of it at 1000 files)
READ_SHARE = 10
#: the most siblings told of (a group is one host's cores)
MAX_SIBLINGS = 1024
PREFIX, SUFFIX = "state-", ".json"
#: the generation told of a worker whose process is gone (proved like any other: a drill
#: takes it as left at once, where asking for it spent up to 1024 asks: asks_for)
GONE = -1
#: the earlier workers of one slot a file names
MAX_GONE = 8


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
        #: the fleet names of the slot's earlier workers, whose processes are gone
        self.gone: list[str] = []
        self._due = False  # a write is scheduled on the loop
        self._read: tuple[float, list[tuple[str, int]]] | None = None  # (when, siblings)
        self._cost = 0.0  # (seconds the last read took)
        #: this boot of the host and this process's start: a file's pid that runs reads as
        #: its writer only while it is not a zombie and has that start (procstart.py)
        self.boot, self.began = procstart.boot_id(), procstart.start_of(os.getpid())

    def start(self) -> None:
        """The slot's file written for this worker, naming the worker it replaces (and
        those that one replaced) as gone when that one's process is."""
        before = _load(self.path)
        if before is not None and before[1] != os.getpid() and not _runs(before):
            self.gone = [before[0], *before[3]][:MAX_GONE]
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
                                       "generation": gen, "gone": self.gone,
                                       "boot": self.boot, "start": self.began}))
            os.replace(tmp, self.path)
            self.written = gen
        except OSError:
            pass  # (the drill then asks this worker itself, as before)

    def siblings(self) -> list[tuple[str, int]]:
        """(fleet name, generation) of each sibling whose process runs, and (fleet name,
        GONE) of each earlier worker of the group whose process is gone (a slot's file
        whose process died, and those its replacement names), sorted by file."""
        now = time.monotonic()
        if self._read is not None and now - self._read[0] < max(FRESH, self._cost * READ_SHARE):
            return self._read[1]
        found: list[tuple[str, int]] = [(name, GONE) for name in self.gone]
        try:
            names = sorted(os.listdir(self.dir))
        except OSError:
            names = []
        for name in names:
            if not (name.startswith(PREFIX) and name.endswith(SUFFIX)) \
                    or name == self.path.name or len(found) >= MAX_SIBLINGS:
                continue
            one = _load(self.dir / name)
            if one is None:
                continue
            who, _, gen, gone = one[:4]
            if _runs(one):
                found.append((who, gen))
            else:
                found.append((who, GONE))
            found.extend((g, GONE) for g in gone)
        self._read = (now, found[:MAX_SIBLINGS])
        self._cost = time.monotonic() - now
        return self._read[1]


Slot = tuple[str, int, int, list[str], object, object]


def _load(path: Path) -> Slot | None:
    """A slot's file: (fleet name, pid, generation, the earlier workers it names gone, its
    writer's boot and start)."""
    try:
        doc = json.loads(path.read_bytes()[:16384])
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    name, pid, gen, gone = doc.get("instance"), doc.get("pid"), doc.get("generation"), \
        doc.get("gone", [])
    if not isinstance(name, str) or not isinstance(pid, int) or isinstance(pid, bool) \
            or not isinstance(gen, int) or isinstance(gen, bool) or pid <= 0 or gen < 0 \
            or not isinstance(gone, list):
        return None
    return name, pid, gen, [g for g in gone if isinstance(g, str)][:MAX_GONE], \
        doc.get("boot"), doc.get("start")


def _runs(slot: Slot) -> bool:
    """Whether the worker a slot's file names runs: its pid has a process that is no
    zombie, of the start and boot the file names (another user's process there: taken as
    running, so never told of as gone). A dead worker not yet reaped, or one whose pid a
    process took since, read as running at the generation it last wrote until its
    replacement started: a drill counted a dead worker that had applied as "applied"."""
    return procstart.alive(slot[1], slot[4], slot[5])
