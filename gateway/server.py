"""Process lifecycle of `killgate serve`: one worker, or a supervisor of N workers.

Owns the C-parser check, the event loop (uvloop), the file-descriptor limit and the
supervisor; one process's life on its loop (signals: SIGTERM/SIGINT drain and exit 0, a
second SIGINT stops at once: stopsignals.py; SIGHUP reload; start, drain) is serving.py's.
With `--workers N`: the supervisor reserves the ports (bound, never listening, SO_REUSEPORT)
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
import faulthandler
import logging
import os
import secrets
import shutil
import signal
import sys

from gateway import rundir
from gateway.childwait import ChildWait
from gateway.configfile import LoadedConfig
from gateway.configsettle import warn_unsettled
from gateway.errors import ConfigError
from gateway.log import event
from gateway.sockets import ListenError, reserved
from gateway.workerconfig import load_at_start, load_shared, save, start_copy
from gateway.workergroup import WorkerGroup
from gateway.workerlink import GROUP_ENV, STACKS_SIGNAL, STOP_AND_RELOAD

__all__ = ["c_parser_in_use", "run_supervisor", "run_worker"]

log = logging.getLogger("killgate")


def c_parser_in_use() -> bool:
    """Both listeners parse with C: the data plane with llhttp (httptools), the admin API with
    aiohttp's C parser (its pure-Python one has had request-smuggling bugs): we refuse
    anything else."""
    from aiohttp import http_parser

    from gateway.dataplane.protocol import c_parser

    return http_parser.HttpRequestParser.__module__ == "aiohttp._http_parser" and c_parser()


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
    # (imported here, not at the top: the data plane, the admin API and telemetry are the
    # workers'; a supervisor that imported them started its workers ~0.5 s CPU later and
    # held them in memory for nothing)
    from gateway.serving import serve_until_stopped

    return asyncio.run(serve_until_stopped(loaded, worker, reuse_port, ports, metrics_dir,
                                           config_bytes))


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
    holds = [reserved(cfg.listen, "listen")]
    try:
        holds.append(reserved(cfg.admin.listen, "admin.listen"))
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
    os.environ[GROUP_ENV] = secrets.token_hex(3)  # (each worker's fleet name carries it)
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
        print(f"killgate: {exc}{listen_hint(exc, config_path)}", file=sys.stderr)
        return 1


def listen_hint(exc: ListenError, config_path: str) -> str:
    """What to change after a listener's error: the setting that gave the address and the
    file it is in (a first `serve` beside a still-running `killgate demo` is refused
    `Address already in use` on 8080 or 8081, which names neither)."""
    if exc.setting is None:
        return ""
    fix = f"set `{exc.setting}` in {config_path} to another address"
    if exc.in_use:
        return (f": another process holds it (a `killgate demo` or another `killgate serve`?); "
                f"stop it, or {fix}")
    return f"; {fix}"
