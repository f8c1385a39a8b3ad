"""What a `serve --workers N` worker and its supervisor agree on, and the tie between them.

Owns the worker's pipe to its supervisor (READY_FD_ENV names its end: a byte once the
worker serves, one every BEAT seconds from the start of its event loop, BEAT_ENV "0" when
nobody watches), the signals both hold until their handlers are in place (STOP_AND_RELOAD,
STACKS_SIGNAL) and the worker's end with its supervisor: on Linux every worker is told its
supervisor's death as a SIGTERM (PR_SET_PDEATHSIG), so a supervisor killed with SIGKILL
leaves no worker serving on alone: an orphan would keep the ports (SO_REUSEPORT) beside
the next supervisor's workers, with a config no reload reaches. The group's side is
workergroup.py, the worker's serving.py. Imports only the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["BEAT", "BEAT_ENV", "GROUP_ENV", "READY_FD_ENV", "STACKS_SIGNAL", "STOP_AND_RELOAD", "ends_with",
           "load_prctl"]

READY_FD_ENV = "KILLGATE_READY_FD"  # a worker writes a byte there once it serves
BEAT_ENV = "KILLGATE_BEAT"  # "0": the watchdog is off, the worker sends no beat
#: the group's tag (6 hex digits, drawn by its supervisor): in each worker's fleet name, so
#: an instance tells its sibling workers from the fleet's other instances (keyconfirm.py)
GROUP_ENV = "KILLGATE_GROUP"
BEAT = 0.5  # seconds: how often a serving worker writes to it again
STACKS_SIGNAL = signal.SIGUSR1  # a worker's stacks to its stderr (server.py registers it)
PR_SET_PDEATHSIG = 1
#: what a `serve` process (a supervisor, a worker, one alone) handles: held from its first
#: moment until its handlers are in place (cli/main.py; server.py, serving.py)
STOP_AND_RELOAD = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def load_prctl() -> Callable[..., int] | None:
    """libc's prctl, loaded before any fork (the child only calls it); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return fn


def ends_with(parent: int, prctl: Callable[..., int] | None,
              then: Callable[[], object] | None = None) -> Callable[[], None]:
    """A Popen `preexec_fn`: the child gets SIGTERM when `parent` dies (and exits at once
    if it died before the child could ask), then runs `then`."""
    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the supervisor died between fork and prctl
                os._exit(1)
        if then is not None:
            then()
    return setup
