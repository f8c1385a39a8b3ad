"""The workers of a `serve --workers N` supervisor: started, signalled, restarted, reaped.

Owns the group's bookkeeping: which slot runs which process, whether the group is stopping,
the restart of a worker that dies unexpectedly, and the exit code. A restarted worker that
dies again before it serves, or within a second of starting to serve, is a crash loop: with
no other worker serving it stops the group (exit 1, for the process manager); while others
serve, the slot is tried again after 1 s, 2 s, 4 s ... up to a minute. A worker tells the
group it serves through its pipe (workerlink.py): a start that fails (a config the state
refuses) takes longer than any fixed window on a loaded host, and was restarted for ever,
a core's worth of work each second. Its beats there (they do not wake the supervisor) are
read every timeout/2: a worker silent for `timeout` (`server.worker_timeout`; its loop
stuck in a bug, a blocking call; noticed within half as long again) is sent STACKS_SIGNAL
(its threads' stacks go to its stderr: faulthandler, from C, so even a loop stuck in C code
writes them), then SIGKILL, and restarted, as gunicorn's `--timeout` does; it held its share
of the connections SO_REUSEPORT hands out. Not SIGABRT: its default action dumps core, a
copy of the worker's memory written where core dumps are enabled, for each stuck worker.
The supervisor (server.py) reserves the ports, prepares the run directory and installs
`forward` as its signal handler; `run` sleeps in childwait.py between exits. Every worker
ends with its supervisor (workerlink.ends_with).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from gateway.childwait import ChildWait
from gateway.log import event
from gateway.stopsignals import HINT, HURRIED_EXIT, STOP_NOW
from gateway.workerlink import (
    BEAT_ENV,
    READY_FD_ENV,
    STACKS_SIGNAL,
    STOP_AND_RELOAD,
    ends_with,
    load_prctl,
)

__all__ = ["WorkerGroup"]

log = logging.getLogger("killgate")
RESTART_WINDOW = 1.0  # a restarted worker that dies within this many seconds of serving
ABORT_GRACE = 1.0  # seconds from a silent worker's STACKS_SIGNAL to its SIGKILL
MAX_BACKOFF = 60.0  # seconds: the longest wait before a crash-looping slot is tried again


class WorkerGroup:
    """`argv(i)` is the command line of slot i's worker; `popen` goes to every Popen."""

    def __init__(self, argv: Callable[[int], list[str]], timeout: float = 0.0,
                 **popen: Any) -> None:
        self.argv = argv
        self.timeout = timeout  # a serving worker silent this long is ended; 0: never
        self.popen = popen
        self.popen["preexec_fn"] = ends_with(os.getpid(), load_prctl(), popen.get("preexec_fn"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.hurried = False  # stopped at once (a second Ctrl-C): exit HURRIED_EXIT
        self._hurried_at: float | None = None  # when `run` saw it (monotonic)
        self._said = 0  # how much of the stop `_say` has logged (1: stopping, 2: at once)
        self.codes: dict[int, int] = {}
        self._restarted: dict[int, float] = {}
        #: slot -> the read end of its worker's ready pipe, until the worker writes or ends
        self._ready: dict[int, int] = {}
        #: slot -> when its worker said it serves (monotonic)
        self._up: dict[int, float] = {}
        #: slot -> when its serving worker last wrote (monotonic); when one silent for
        #: `timeout` was sent STACKS_SIGNAL
        self._beat: dict[int, float] = {}
        self._aborted: dict[int, float] = {}
        self._looked = 0.0  # when `_watch` last looked at every serving worker
        #: slots whose worker's loop is done (b"0": drained, ending): silent from then on
        self._done: set[int] = set()
        #: crash-looping slots while others serve: when each is started again, and its
        #: current wait (doubled at each failure, from 1 s to MAX_BACKOFF)
        self._due: dict[int, float] = {}
        self._backoff: dict[int, float] = {}
        #: signal -> how many times `forward` passed it on (see `spawn`)
        self._forwarded: dict[int, int] = {}

    def spawn(self, i: int) -> None:
        """Start slot i's worker, unless the group is stopping. The worker starts with
        SIGHUP blocked (the mask is inherited across exec) and unblocks it once it can
        reload: a SIGHUP meanwhile waits for it, where the default action would end it
        (and a restarted worker's death within RESTART_WINDOW, the group). STACKS_SIGNAL
        likewise, until its handler is in place (server.serve): `forward` passes an
        operator's on to every worker, one still starting too. SIGTERM and SIGINT too,
        until its stop handlers are in place (serving.py): one forwarded while it still
        imported raised KeyboardInterrupt there, a traceback in the log (seen in CI); held,
        it stops the worker before its listeners open (start_abandoned, exit 0)."""
        if self.stopping:
            return
        before = dict(self._forwarded)
        r, w = os.pipe()
        os.set_blocking(r, False)
        env = dict(self.popen.get("env") or os.environ)
        env[READY_FD_ENV] = str(w)
        env[BEAT_ENV] = "1" if self.timeout else "0"  # (each beat wakes the supervisor)
        popen = {**self.popen, "env": env,
                 "pass_fds": (*self.popen.get("pass_fds", ()), w)}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {*STOP_AND_RELOAD, STACKS_SIGNAL, STOP_NOW})
        try:
            proc = subprocess.Popen(self.argv(i), **popen)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._forget(i)
        self._ready[i] = r
        self.procs[i] = proc
        # A signal forwarded while Popen ran (it waits for the exec) missed this worker:
        # a SIGTERM stops it, a SIGHUP is sent on (held pending until it can reload).
        if self.stopping:
            proc.terminate()
            return
        for sig, n in self._forwarded.items():
            if n != before.get(sig, 0):
                proc.send_signal(sig)

    def forward(self, sig: int, _frame: object = None) -> None:
        """The supervisor's signal handler: SIGTERM/SIGINT stop the group (the workers
        drain); a SIGINT once it stops (a second Ctrl-C) stops it at once: the workers get
        STOP_NOW (each also gets every Ctrl-C from the terminal: it cannot count them
        itself). Every signal goes on to the running workers."""
        if sig == signal.SIGINT and self.stopping:
            self.hurried = True
            sig = STOP_NOW
        elif sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        self._forwarded[sig] = self._forwarded.get(sig, 0) + 1
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(sig)

    def run(self, wait: ChildWait) -> int:
        """Reap workers until none is left; 0 when every worker ended cleanly."""
        while self.procs or self._due:
            self._say()
            self._heard()
            for i, p in list(self.procs.items()):
                rc = p.poll()
                if rc is not None:
                    del self.procs[i]
                    self._heard()  # (it may have written just before it ended)
                    self._forget(i)
                    self._exited(i, rc)
            now = time.monotonic()
            self._watch(now)
            self._cut_short(now)
            for i, at in list(self._due.items()):
                if self.stopping or at <= now:
                    del self._due[i]
                    self._restarted[i] = now
                    self.spawn(i)  # (nothing while stopping)
            if self.procs or self._due:
                wakes = [*self._due.values(), *self._watch_due()]
                if self._hurried_at is not None:  # (a drained worker's b"0" wakes nobody)
                    wakes.append(max(self._hurried_at, now) + ABORT_GRACE)
                # (a serving worker's pipe is read when something else wakes us, and at
                # each look: its beats do not wake the supervisor)
                wait.sleep({p.pid for p in self.procs.values()},
                           {r for i, r in self._ready.items() if i not in self._up},
                           min(wakes) - now if wakes else None)
        self._say()
        if self.hurried:
            return HURRIED_EXIT
        return 0 if all(c == 0 for c in self.codes.values()) else 1

    def _say(self) -> None:
        """Log the group's stop once, and its stop at once (from the loop, not the
        signal handler)."""
        if self.stopping and self._said < 1:
            self._said = 1
            event(log, "phase", phase="stopping", workers=len(self.procs),
                  then="the workers drain (up to server.drain_timeout); " + HINT)
        if self.hurried and self._said < 2:
            self._said = 2
            event(log, "phase", logging.WARNING, phase="stopping_now", workers=len(self.procs),
                  consequence=f"the workers cut the answers still open; exit {HURRIED_EXIT}")

    def _heard(self) -> None:
        """Read the workers' pipes: b"." is a worker's event loop running (every BEAT
        seconds from its start), b"1" a worker that serves, b"0" one whose loop is done
        (what is left, the interpreter's exit, may take its time); the end of the pipe, a
        worker that ended (reaped by `run`)."""
        for i, r in list(self._ready.items()):
            try:
                data = os.read(r, 4096)
            except BlockingIOError:
                continue
            if data:
                now = time.monotonic()
                if b"0" in data:  # its loop is done (drained): its exit is not watched
                    self._done.add(i)
                    self._beat.pop(i, None)
                elif i not in self._done:
                    self._beat[i] = now
                if b"1" in data:
                    self._up.setdefault(i, now)
                continue
            os.close(r)
            del self._ready[i]

    def _watch(self, now: float) -> None:
        """Every timeout/2, a serving worker whose pipe stayed empty for `timeout` (no beat
        read since: it has been silent that long at least, at most half as long again) is
        sent STACKS_SIGNAL (its stacks to its stderr), and SIGKILL if it has not ended
        ABORT_GRACE later. Its exit then restarts it. Also while the group stops: a
        draining worker's loop beats; a stuck one never runs its SIGTERM handler, and the
        group would wait for it for ever."""
        if not self.timeout:
            return
        for i, p in self.procs.items():
            aborted = self._aborted.get(i)
            if aborted is not None and now - aborted >= ABORT_GRACE:
                p.kill()
                self._aborted[i] = math.inf  # (once: its exit is reaped next)
        if now - self._looked < self.timeout / 2:
            return
        self._looked = now
        for i, p in self.procs.items():
            beat = self._beat.get(i)
            if i not in self._aborted and beat is not None and now - beat >= self.timeout:
                event(log, "worker_unresponsive", logging.ERROR, worker=i, pid=p.pid,
                      silent_s=round(now - beat, 1),
                      action="its stacks follow on its stderr, then SIGKILL and "
                      + ("exit 1 (it did not drain)" if self.stopping else "restart"))
                self._aborted[i] = now
                p.send_signal(STACKS_SIGNAL)

    def _cut_short(self, now: float) -> None:
        """A second Ctrl-C stops at once, the drained workers too: one whose loop is done
        ignores every signal until its exit (serving.py), STOP_NOW included, so what is
        left of it (the interpreter's exit: threads joined, a call in a thread that never
        returns) is not hurried by it, and the group waited for it for ever. One still
        there ABORT_GRACE later (time for its last lines) is sent SIGKILL."""
        if not self.hurried:
            return
        if self._hurried_at is None:
            self._hurried_at = now
        if now - self._hurried_at < ABORT_GRACE:
            return
        for i in sorted(self._done & self.procs.keys()):
            p = self.procs[i]
            if self._aborted.get(i) != math.inf:
                event(log, "worker_killed", logging.WARNING, worker=i, pid=p.pid,
                      why=f"stopped at once (a second Ctrl-C): drained, it had not exited "
                          f"{ABORT_GRACE:g}s later", action="SIGKILL")
                p.kill()
                self._aborted[i] = math.inf  # (once: its exit is reaped next)

    def _watch_due(self) -> list[float]:
        """When `_watch` must look again."""
        if not self.timeout:
            return []
        # (a worker SIGKILLed: only its exit is waited for, no deadline)
        due = [t + ABORT_GRACE for t in self._aborted.values() if t != math.inf]
        return [self._looked + self.timeout / 2, *due] if self._beat else due

    def _forget(self, i: int) -> None:
        self._done.discard(i)
        self._beat.pop(i, None)
        self._aborted.pop(i, None)
        r = self._ready.pop(i, None)
        if r is not None:
            os.close(r)

    def _exited(self, i: int, rc: int) -> None:
        up = self._up.pop(i, None)
        now = time.monotonic()
        if self.stopping:
            # -SIGTERM: the worker was still booting (no handler yet), so it served
            # nothing; any other non-zero code is a real failure.
            self.codes[i] = 0 if rc == -signal.SIGTERM else rc
        elif i not in self._restarted or (up is not None and now - up > RESTART_WINDOW):
            event(log, "worker_exited", logging.WARNING, worker=i, code=rc, action="restart",
                  served=up is not None)
            self._backoff.pop(i, None)
            self._restarted[i] = now
            self.spawn(i)
        elif any(j in self._up for j in self.procs):
            # a crash loop while other workers serve: they keep serving; this slot is
            # tried again later and later (a start that cannot succeed costs no core)
            delay = self._backoff[i] = min(MAX_BACKOFF, 2 * self._backoff.get(i, 0.5))
            self._due[i] = now + delay
            event(log, "worker_exited", logging.ERROR, worker=i, code=rc, served=up is not None,
                  action=f"restart in {delay:g}s (crash loop; the other workers serve)")
        else:
            event(log, "worker_exited", logging.ERROR, worker=i, code=rc, served=up is not None,
                  action="stop (crash loop)")
            self.codes[i] = rc
            self.forward(signal.SIGTERM)
