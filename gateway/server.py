"""Process lifecycle of `killgate serve`: one worker, or a supervisor of N workers.

Owns signals (SIGTERM/SIGINT drain and exit 0, a second SIGINT stops at once:
stopsignals.py; SIGHUP reload), the C-parser check, and
`--workers N`: the supervisor reserves the ports (bound, never listening, SO_REUSEPORT)
and starts N copies of itself that each bind the same ports with SO_REUSEPORT, so the
kernel spreads connections across them. A worker that dies unexpectedly is restarted; the
supervisor sleeps until one does or a signal comes (childwait.py: no periodic wake-up while
the workers serve, and no signal lost).
The supervisor also makes a private run directory where the workers share their metrics
(telemetry/workers.py), so /metrics answers for the whole group, and the config bytes the
group runs (workerconfig.py), so a worker that starts apart from its siblings serves what
they run. Removed at exit; one a supervisor killed with SIGKILL left is removed by the next
(rundir.py), and its workers got SIGTERM when it died (workergroup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path

from gateway import rundir
from gateway.app import Gateway
from gateway.childwait import ChildWait
from gateway.configfile import LoadedConfig
from gateway.configsettle import warn_unsettled
from gateway.errors import ConfigError
from gateway.log import event
from gateway.sockets import ListenError, reserved
from gateway.stopsignals import HURRIED_EXIT, STOP_NOW, StopSignals
from gateway.workerconfig import file_instead, load_at_start, load_shared, save, start_copy
from gateway.workergroup import BEAT, BEAT_ENV, READY_FD_ENV, STACKS_SIGNAL, STOP_AND_RELOAD, WorkerGroup

__all__ = ["c_parser_in_use", "run_supervisor", "run_worker"]

log = logging.getLogger("killgate")


def c_parser_in_use() -> bool:
    """Both listeners parse with C: the data plane with llhttp (httptools), the admin API with
    aiohttp's C parser (its pure-Python one has had request-smuggling bugs): we refuse
    anything else."""
    from aiohttp import http_parser

    from gateway.dataplane.protocol import c_parser

    return http_parser.HttpRequestParser.__module__ == "aiohttp._http_parser" and c_parser()


def instance_id(worker: int | None) -> str:
    """This process's name in the fleet (heartbeats, receipts, acks): its host, pid and a
    random tag, drawn once at start. Host and pid alone are not unique: containers on the
    host's network share its host name, and each runs killgate as pid 1; two such
    instances merged their acks, and a receipt counted one for both."""
    me = f"{socket.gethostname().split('.')[0]}-{os.getpid()}-{secrets.token_hex(3)}"
    return me if worker is None else f"{me}-w{worker}"


async def _serve(loaded: LoadedConfig, worker: int | None, reuse_port: bool,
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
    try:
        try:
            started = await _start_unless_stopped(gw, stop)
        except BaseException:
            await gw.shutdown()
            raise
        if started:
            if config_bytes is not None:
                _share_what_runs(gw, config_bytes)
            if pipe is not None:
                _tell(pipe, b"1")  # it serves (a worker that dies before, once restarted,
                #                    is a crash loop: workergroup.py)
            # a supervisor starts its workers with SIGHUP blocked (see spawn): one that
            # came while this worker started is delivered now, to the handler above
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            await stop.wait()
        await gw.shutdown()
        if pipe is not None:  # drained: the supervisor's watchdog leaves the exit alone
            _tell(pipe, b"0")
    finally:
        if group is not None:
            await group.stop()
        # stopped: a signal from now on is held until the exit (the loop's handlers go,
        # and the default action of one that came during the teardown ended the process
        # with -1 or -15 in place of 0)
        signal.pthread_sigmask(signal.SIG_BLOCK, {*STOP_AND_RELOAD, STOP_NOW})
    return HURRIED_EXIT if signals.hurried else 0


async def _start_unless_stopped(gw: Gateway, stop: asyncio.Event) -> bool:
    """`gw.start()`, given up at a SIGTERM/SIGINT that comes first (the start may wait
    `state.start_timeout` for Redis): the listeners never open then, and the process ends
    at once (exit 0) instead of at the start deadline. True when the start finished."""
    starting = asyncio.ensure_future(gw.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if starting.done():
        starting.result()  # (its error, if it failed)
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    event(log, "phase", phase="start_abandoned",
          why="SIGTERM or SIGINT before the start finished: the listeners never opened")
    return False


def run_worker(config_path: str, worker: int | None = None, reuse_port: bool = False,
               ports: tuple[int | None, int | None] = (None, None),
               metrics_dir: str | None = None, config_bytes: str | None = None) -> int:
    loaded, unsettled = (load_shared(config_path, config_bytes) if config_bytes is not None
                         else load_at_start(config_path))
    _configure_logging(loaded)
    warn_unsettled(config_path, unsettled)
    if not c_parser_in_use():
        event(log, "refusing_to_start", logging.ERROR,
              reason="a C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS set, aiohttp "
                     "installed without its C extensions, or httptools without llhttp); "
                     "pure-Python parsers have had request-smuggling bugs")
        return 3
    _install_uvloop()
    _raise_fd_limit(loaded.config.server.max_connections)
    return asyncio.run(_serve(loaded, worker, reuse_port, ports, metrics_dir, config_bytes))


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


def _raise_fd_limit(want: int) -> None:
    """Every client and backend connection is a file descriptor, and the usual soft limit
    (1024) would refuse connections long before `server.max_connections`: raise the soft
    limit to the hard one, and say so when even that is below what the config allows."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = max(soft, want) if hard == resource.RLIM_INFINITY else hard
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on Linux
        return
    if soft < want:
        event(log, "fd_limit_low", logging.WARNING, limit=soft, wanted=want,
              hint="connections beyond it are refused by the kernel: raise the hard limit "
                   "(ulimit -Hn, systemd LimitNOFILE=, docker --ulimit nofile=) or lower "
                   "server.max_connections")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _configure_logging(loaded: LoadedConfig) -> None:
    from gateway.log import configure

    configure(loaded.config.log.format, loaded.config.log.level)


def run_supervisor(config_path: str, workers: int) -> int:
    """Start `workers` worker processes sharing the ports; forward signals; reap."""
    loaded, unsettled = load_at_start(config_path)
    _configure_logging(loaded)
    warn_unsettled(config_path, unsettled)
    if not c_parser_in_use():
        return run_worker(config_path)  # prints the refusal
    cfg = loaded.config
    # Reserve the ports (resolving :0) without listening, so workers can share them (and
    # nobody else: a port another group holds is refused, as for a single process)
    holds = [reserved(cfg.listen)]
    try:
        holds.append(reserved(cfg.admin.listen))
    except ListenError:
        holds[0].close()
        raise
    ports = [h.getsockname()[1] for h in holds]
    event(log, "phase", phase="supervisor", workers=workers, data_port=ports[0],
          admin_port=ports[1], pid=os.getpid())
    # private (0700): the workers' metric snapshots, one file per worker slot, and the
    # config bytes they parse
    run_dir: str | None = None
    rundir.sweep()
    try:
        run_dir = rundir.make()
    except OSError as exc:
        event(log, "worker_metrics_disabled", logging.WARNING, error=str(exc),
              consequence="each /metrics scrape shows the one worker that answered it, and "
                          "each worker reads the config file itself when it starts; make "
                          "TMPDIR (or /tmp) writable")
    shared: list[str] = []
    if run_dir is not None:
        shared = ["--metrics-dir", run_dir]
        snapshot = os.path.join(run_dir, "config")
        if (loaded.raw is not None and save(snapshot, loaded.raw)
                and save(start_copy(snapshot), loaded.raw)):
            shared += ["--config-bytes", snapshot]
    group = WorkerGroup(lambda i: [
        sys.executable, "-m", "gateway", "serve", "-c", config_path,
        "--worker-index", str(i), "--reuse-port", *shared,
        "--data-port", str(ports[0]), "--admin-port", str(ports[1])],
        timeout=cfg.server.worker_timeout)
    for sig in STOP_AND_RELOAD:
        signal.signal(sig, group.forward)
    # SIGUSR1 to the supervisor (the PID an operator has: a container's, systemd's): its
    # own stacks, then the workers' (those are what a stuck request is in)
    # (registered again, chained to the forward: serve() registered it without one, and
    # faulthandler does not install its handler again for a signal it holds)
    # (held meanwhile: between the two, its default action would end the supervisor)
    signal.pthread_sigmask(signal.SIG_BLOCK, {STACKS_SIGNAL})
    faulthandler.unregister(STACKS_SIGNAL)
    signal.signal(STACKS_SIGNAL, group.forward)
    faulthandler.register(STACKS_SIGNAL, all_threads=True, chain=True)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {*STOP_AND_RELOAD, STACKS_SIGNAL})  # (held:
    # cli/main.py)
    wait = ChildWait().open()  # (before the first child: its exit must wake the sleep)
    try:
        for i in range(workers):
            group.spawn(i)
        return group.run(wait)
    finally:
        # every worker has ended: a signal from now on is held until the exit (the
        # interpreter's teardown puts the default actions back, which ended the
        # supervisor with -1 or -15 in place of its code)
        signal.pthread_sigmask(signal.SIG_BLOCK, {*STOP_AND_RELOAD, STACKS_SIGNAL})
        wait.close()
        for s in holds:
            s.close()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)


def serve(config_path: str, workers: int, worker_index: int | None, reuse_port: bool,
          data_port: int | None, admin_port: int | None, metrics_dir: str | None = None,
          config_bytes: str | None = None) -> int:
    if config_bytes is not None and worker_index is None:  # (it writes there)
        print("killgate: --config-bytes is for the workers a supervisor starts",
              file=sys.stderr)
        return 2
    faulthandler.enable()  # (a fatal signal: stacks to stderr)
    # SIGUSR1: every thread's stack to stderr, and on it goes (the supervisor's watchdog
    # sends it to a silent worker before its SIGKILL; an operator may send it to any serve
    # process: the supervisor's too, which its default action ended, and its workers)
    faulthandler.register(STACKS_SIGNAL, all_threads=True)
    # (a worker starts with it held, as SIGHUP: its default action ends a process)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {STACKS_SIGNAL})
    try:
        if workers > 1 and worker_index is None:
            return run_supervisor(config_path, workers)
        return run_worker(config_path, worker_index, reuse_port, (data_port, admin_port),
                          metrics_dir, config_bytes)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"killgate: config: {p}", file=sys.stderr)
        return 1
    except ListenError as exc:  # (a port in use: another killgate, or another server)
        print(f"killgate: {exc}", file=sys.stderr)
        return 1
