"""`killgate serve` started as a process forked from the CLI fork server (tests/cli_fork.py),
as tests/conftest.py's GatewayProcess starts it (a single process or a group's supervisor).

A fresh `python -m gateway serve` spent ~0.7 s of CPU importing before it served (3-4 s of
wall time to ready on a loaded machine), and ~0.7 s more at its exit in the interpreter's
finalization: the suite starts well over a hundred. Forked from the server, it starts from
imported modules: stdout and stderr on the caller's log file, a session of its own (its
pid is its process group's, as Popen(start_new_session=True) gives it), the caller's
environment, cwd, umask and open-file limits, ended with the test process as
die_with_parent ends it. Its parent, a child of the server, only waits for it and answers
its exit status as Popen's returncode says it (-N for a signal; an os._exit's code too).
It ends as the interpreter ends after `raise SystemExit(main())`: non-daemon threads
joined, atexit's functions, stdio flushed; not the finalization, which frees objects.
What differs from `python -m gateway serve`: /proc/PID/cmdline (the server's), and no
import of the gateway in that process (`serve --workers N` still execs its workers).
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from tests.cli_fork import ROOT, Forked, _die_with_the_server, _recv, _send, _server_path

# --------------------------------------------------------------------------- the server side


def serve_child(conn: socket.socket, req: dict[str, Any]) -> None:
    """`killgate serve` (or any long-running command) with stdout and stderr on the file
    the caller sent, in a session of its own, as GatewayProcess started it with Popen
    (start_new_session, die_with_parent). Its parent, this process, only waits for it and
    answers its exit status as Popen's returncode says it (-N for a signal, and an
    os._exit's code too: a second Ctrl-C's HURRIED_EXIT is one)."""
    _, fds, _, _ = socket.recv_fds(conn, 1, 1)
    _die_with_the_server()
    pid = os.fork()
    if pid == 0:
        conn.close()
        os.setsid()
        _die_with_the_server()  # (with this process, which ends with the server)
        os.dup2(fds[0], 1)
        os.dup2(fds[0], 2)
        os.close(fds[0])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        # (what Popen's child inherits from the caller: its umask and open-file limits)
        os.umask(req["umask"])
        with contextlib.suppress(ValueError, OSError):  # (a hard limit only goes down)
            resource.setrlimit(resource.RLIMIT_NOFILE, tuple(req["nofile"]))
        tempfile.tempdir = None  # (TMPDIR as the command's environment says)
        # (PYTHONUNBUFFERED=1 in its environment, as GatewayProcess sets: lines reach the
        # log as they are written, which tests wait for)
        for f in (sys.stdout, sys.stderr):
            if isinstance(f, io.TextIOWrapper):
                f.reconfigure(write_through=True, line_buffering=True)
        sys.argv = [str(ROOT / "gateway" / "__main__.py"), *req["argv"]]
        _exit_as_python(req["argv"])
    os.close(fds[0])
    _send(conn, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    _send(conn, {"rc": os.waitstatus_to_exitcode(status)})
    conn.close()
    os._exit(0)


def _exit_as_python(argv: list[str]) -> None:
    """Run the CLI's main() and end as the interpreter would after `raise SystemExit(main())`:
    atexit's functions run, the exit code is SystemExit's, an uncaught exception is printed
    and exits 1. (Not the interpreter's finalization: nothing of the command's is left
    to it but objects to free.)"""
    import atexit
    import traceback

    rc: Any = 0
    try:
        from gateway.cli.main import main

        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    except KeyboardInterrupt:
        traceback.print_exc()
        rc = -signal.SIGINT  # (the interpreter then ends by SIGINT: Popen's -2)
    except BaseException:  # noqa: BLE001 - (printed as the interpreter prints an uncaught exception)
        traceback.print_exc()
        rc = 1
    if rc is None:
        rc = 0
    elif not isinstance(rc, int):
        print(rc, file=sys.stderr)
        rc = 1
    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]  # (non-daemon threads joined)
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            f.flush()
    if rc == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(rc & 0xFF)


# --------------------------------------------------------------------------- the test side


class Started(Forked):
    """`killgate *argv` started as subprocess.Popen(stdout=log, stderr=STDOUT,
    start_new_session=True) starts it, forked from the server: pid (its session's and
    process group's), poll, wait, returncode, send_signal and kill as Popen's (the exit
    status comes from its parent, which only waits for it)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, log: int) -> None:
        self.args = ["killgate", *argv]
        self.returncode = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(_server_path())
        umask = int(next(line.split()[1] for line in Path("/proc/self/status").read_text()
                         .splitlines() if line.startswith("Umask:")), 8)
        _send(sock, {"argv": argv, "env": env, "cwd": cwd, "serve": True, "umask": umask,
                     "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)})
        socket.send_fds(sock, [b"F"], [log])
        self.pid = _recv(sock)["pid"]
        self._watch(sock)


def started() -> None:
    """The server, started now if it is not running (it imports for a second or more)."""
    _server_path()


def start(argv: list[str], env: dict[str, str], cwd: str, log: int) -> Started:
    """A long-running command (`serve`) with stdout and stderr on file descriptor `log`."""
    return Started(argv, env, cwd, log)
