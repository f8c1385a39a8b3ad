"""One serving process's life on its event loop: start (given up at a stop signal that
comes first), serve until SIGTERM/SIGINT, drain, exit code.

Owns what a worker of a group does besides serving: the pipe to its supervisor (the ready
byte, the heartbeat the watchdog reads, the drained byte) and sharing each config a reload
puts live with its siblings; and the process's fleet name (`instance_id`). server.py picks
the loop (uvloop) and calls it; it imports the composition root, never the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

from gateway.app import Gateway
from gateway.configfile import LoadedConfig
from gateway.log import event
from gateway.stopsignals import HURRIED_EXIT, STOP_NOW, StopSignals
from gateway.tasks import unless_stopped
from gateway.workerconfig import file_instead, save
from gateway.workerlink import BEAT, BEAT_ENV, GROUP_ENV, READY_FD_ENV, STOP_AND_RELOAD
from gateway.workerstates import WorkerStates

__all__ = ["instance_id", "serve_until_stopped"]

log = logging.getLogger("killgate")


def instance_id(worker: int | None) -> str:
    """This process's name in the fleet (heartbeats, receipts, acks): its host, pid and a
    random tag, drawn once at start. Host and pid alone are not unique: containers on the
    host's network share its host name, and each runs killgate as pid 1; two such
    instances merged their acks, and a receipt counted one for both. A worker's tag is its
    group's (GROUP_ENV, drawn by the supervisor; its pid tells it from its siblings): the
    fleet's other instances are told from its sibling workers by it (keyconfirm.py)."""
    group = os.environ.get(GROUP_ENV, "") if worker is not None else ""
    tag = group if len(group) == 6 and all(c in "0123456789abcdef" for c in group) \
        else secrets.token_hex(3)
    me = f"{socket.gethostname().split('.')[0]}-{os.getpid()}-{tag}"
    return me if worker is None else f"{me}-w{worker}"


async def serve_until_stopped(loaded: LoadedConfig, worker: int | None, reuse_port: bool,
                 ports: tuple[int | None, int | None], metrics_dir: str | None = None,
                 config_bytes: str | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    gw = Gateway(loaded, instance_id(worker), reuse_port=reuse_port, ports=ports)
    if config_bytes is not None and loaded.path is not None:
        # the group's bytes refused by the state (a copy a reload's write-back missed):
        # the file the running workers reloaded, rather than a crash loop
        path = str(loaded.path)
        gw.start_fallback = lambda running, refused: file_instead(path, running, refused)
    group = None
    if metrics_dir is not None and worker is not None:
        from gateway.telemetry.workers import WorkerMetrics

        group = WorkerMetrics(gw.metrics, gw.requests, Path(metrics_dir), worker)
        group.start()  # before the admin listener opens: every scrape is the group's
        gw.metrics.expose(group)
    pipe = _group_pipe()
    # (a group's worker: its supervisor counts the Ctrl-Cs, and sends STOP_NOW)
    signals = StopSignals(stop, gw.hurry, group_worker=worker is not None)
    signals.install(loop)
    loop.add_signal_handler(signal.SIGHUP, gw.request_reload)
    # (held since the process began: cli/main.py, or its supervisor's spawn for STOP_NOW;
    # SIGHUP stays held until it can reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, STOP_NOW})
    # a group's worker: its slot's file written before the start heartbeats its name (one
    # killed between its first heartbeat and the end of its start was otherwise named by
    # no file: a drill that began with it listed asked for it until its budget ran out)
    states = None if metrics_dir is None or worker is None else \
        _slot_file(gw, Path(metrics_dir), worker)
    try:
        try:
            started = await _start_unless_stopped(gw, stop)
        except BaseException:
            await gw.shutdown()
            raise
        if started:
            # what the start built lives as long as the process: a full collection no
            # longer walks it (without: 70-345 ms of the loop held by each full collection
            # that a /metrics scrape's copy of the page set off on a loaded machine, every
            # request of the process waiting; tests/test_metrics_loop.py). O(1), no pause;
            # the little garbage the start left is kept for good
            gc.freeze()
            if config_bytes is not None:
                _share_what_runs(gw, config_bytes)
            if states is not None and gw.admin_api is not None:
                gw.admin_api.siblings = states.siblings  # (workerstates.py: one ask a group)
            if pipe is not None:
                _tell(pipe, b"1")  # it serves (a worker that dies before, once restarted,
                #                    is a crash loop: workergroup.py)
            # a supervisor starts its workers with SIGHUP blocked (see spawn): one that
            # came while this worker started is delivered now, to the handler above
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            await stop.wait()
        # drained: the supervisor's watchdog leaves the exit alone (told before the
        # `stopped` line: a worker paused past that line is not one that is stuck)
        await gw.shutdown(None if pipe is None else lambda: _tell(pipe, b"0"))
    finally:
        if group is not None:
            await group.stop()
        # stopped: a signal from now on is held until the exit (the loop's handlers go,
        # and the default action of one that came during the teardown ended the process
        # with -1 or -15 in place of 0)
        signal.pthread_sigmask(signal.SIG_BLOCK, {*STOP_AND_RELOAD, STOP_NOW})
        _ignored_from_now_on(loop)
        if worker is None:
            _at_once_from_now_on()
    return HURRIED_EXIT if signals.hurried else 0


def _slot_file(gw: Gateway, run_dir: Path, worker: int) -> WorkerStates:
    """A group's worker: the generation it runs kept in the group's run directory (its
    siblings tell a drill of it: workerstates.py), from before its start."""
    states = WorkerStates(run_dir, worker, gw.instance, lambda: gw.holder.doc.generation)
    states.start()
    gw.holder.listen(states.changed)
    return states


def _ignored_from_now_on(loop: asyncio.AbstractEventLoop) -> None:
    """The stop and reload signals ignored until the exit, in every thread. Held above
    in this thread only: the executor's threads and the config watcher's (anyio's, which
    outlive the loop) began with some of them unblocked, and one delivered there once the
    loop's close (or the interpreter's) put the default action back ended a stopped,
    drained process with -1 (SIGHUP) or -15, its supervisor with 1 (seen in CI: SIGHUPs
    sent every 10 ms through a stop). Taken from the loop first, so that its close puts
    nothing back; SIG_IGN is left alone by the interpreter's teardown.

    Never through the default action on the way: uvloop's remove_signal_handler puts
    SIG_DFL back, and a SIGHUP that another thread took before the next line set SIG_IGN
    (a switch of the GIL stretches that window) ended the process all the same (what a
    group's exit 1 in CI's SIGHUP test fits; tests/test_teardown_signals.py shows the
    window). On uvloop SIG_IGN goes in over the loop's handler,
    which stays registered: its close touches no disposition once the loop has stopped
    (it removes only while it runs). asyncio's loop puts SIG_DFL back at its close, so it
    is taken from that loop first, as before."""
    keeps = type(loop).__module__.startswith("uvloop")
    for sig in (*STOP_AND_RELOAD, STOP_NOW):
        if not keeps:
            loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)


def _at_once_from_now_on() -> None:
    """A process alone (not a group's worker, whose supervisor counts the Ctrl-Cs and ends
    a drained worker that lingers): a second Ctrl-C (SIGINT) or SIGQUIT during what is left
    of the exit ends the process at once, exit HURRIED_EXIT. Ignored, an exit that hung (a
    call in a thread that never returns: the loop's close and the interpreter's wait for
    it) could only be ended by SIGKILL. Let through in this thread, where a wait is
    interrupted for the handler (delivered to another, it waited for the wait's end)."""
    def now(_sig: int, _frame: object) -> None:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        os._exit(HURRIED_EXIT)

    for sig in (signal.SIGINT, STOP_NOW):
        signal.signal(sig, now)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, STOP_NOW})


async def _start_unless_stopped(gw: Gateway, stop: asyncio.Event) -> bool:
    """`gw.start()`, given up at a SIGTERM/SIGINT that comes first (the start may wait
    `state.start_timeout` for Redis): the listeners never open then, and the process ends
    at once (exit 0) instead of at the start deadline. True when the start finished."""
    async def start() -> bool:
        await gw.start()
        return True

    if await unless_stopped(start(), stop):
        return True
    event(log, "phase", phase="start_abandoned",
          why="SIGTERM or SIGINT before the start finished: the listeners never opened")
    return False


def _group_pipe() -> int | None:
    """A supervisor's worker: the pipe to its supervisor, beating from now on: a byte every
    BEAT seconds from the event loop, that the loop still runs (workergroup.py: a worker
    silent for `server.worker_timeout` is ended; with it 0, BEAT_ENV says so, and no beat
    is sent). None outside a group."""
    fd = os.environ.pop(READY_FD_ENV, None)
    beating = os.environ.pop(BEAT_ENV, "1") != "0"  # (worker_timeout 0: nobody listens)
    if fd is None:
        return None
    try:
        w = int(fd)
        os.set_inheritable(w, False)
        os.set_blocking(w, False)
    except (OSError, ValueError):
        return None  # (not a supervisor's pipe: nobody is told)
    loop = asyncio.get_running_loop()

    def beat() -> None:
        if _tell(w, b"."):
            loop.call_later(BEAT, beat)

    if beating:
        beat()
    return w


def _tell(w: int, what: bytes) -> bool:
    """Write to the supervisor; False once it is gone (PR_SET_PDEATHSIG ends us then)."""
    try:
        os.write(w, what)
    except BlockingIOError:
        pass  # (a full pipe: the supervisor has plenty to read)
    except OSError:
        return False
    return True


def _share_what_runs(gw: Gateway, shared: str) -> None:
    """Each config a reload puts live becomes the group's. (Not the one this worker started
    on: it is the group's already, or, read from the file as a fallback, perhaps an edit
    no worker applied; and a sibling's reload may have replaced it meanwhile.)"""
    def saved(new: LoadedConfig) -> None:
        if new.raw is not None:
            save(shared, new.raw)

    gw.config_applied.append(saved)
