"""`killgate ...` run as a process forked from one that has already imported the CLI.

A fresh `python -m gateway` spends most of its ~0.6 s of CPU importing (aiohttp, pydantic,
the config models) before the command runs; the suite runs the CLI a few hundred times. A
server process per test process imports `gateway.cli` once; each command is a child forked
from it: its own process (os.environ, cwd, argv, exit code, stdout and stderr as the
command's own), the same `main()` that `python -m gateway` runs (gateway/__main__.py), an
uncaught exception printed as the interpreter prints it, the exit code of SystemExit. The
server never runs a command itself, so every child starts from imported modules only: the
CLI's, every other module of `gateway` and matplotlib (what commands import as they run,
`check` and a drill's picture among them; see _warm).

run() is subprocess.run(capture_output=True, text=True); tests/cli_fork_spawn.py's spawn()
is subprocess.Popen(stdout=PIPE, stderr=PIPE, text=True) for a command read as it runs (a
drill: its lines as they come, SIGINT, SIGKILL). `killgate serve` is started by
tests/cli_fork_serve.py.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _send(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv(sock: socket.socket) -> Any:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the CLI process ended without an answer")
            buf += chunk
        return buf

    (n,) = struct.unpack("!I", exactly(4))
    return json.loads(exactly(n))


class Forked:
    """A command forked from the server, shown as subprocess.Popen shows one: pid, poll,
    wait, returncode, send_signal and kill. Its exit code comes over the server's socket
    (the child is the server's, not ours); one whose parent went before it answered was
    killed with it (PR_SET_PDEATHSIG), or by the signal we sent: -signal, as Popen says it."""

    args: list[str]
    pid: int

    def _watch(self, sock: socket.socket) -> None:
        """Wait in a thread for the exit code `sock` brings."""
        self.returncode: int | None = None
        self._signalled = 0
        self._sock = sock
        self._done = threading.Event()
        threading.Thread(target=self._await_exit, daemon=True).start()

    def _await_exit(self) -> None:
        self._sock.settimeout(None)
        try:
            rc = int(_recv(self._sock)["rc"])
        except (OSError, EOFError, ValueError):
            rc = -(self._signalled or signal.SIGKILL)
        finally:
            self._sock.close()
        self.returncode = rc
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            self._signalled = sig
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# --------------------------------------------------------------------------- the server side


def _child(conn: socket.socket) -> None:
    """In the forked child: run one command as `python -m gateway` would, answer, exit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    req = _recv(conn)
    if req.get("serve"):
        from tests.cli_fork_serve import serve_child

        serve_child(conn, req)
    if req.get("stream"):  # (stdout and stderr: the pipes the caller reads as they come)
        _, fds, _, _ = socket.recv_fds(conn, 1, 2)
        out = err = None
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        _die_with_the_server()
    else:
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - ours until exit
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
    _send(conn, {"pid": os.getpid()})
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    # (TMPDIR as the command's environment says: the TemporaryFiles above cached the
    # server's in tempfile.tempdir, and a TMPDIR the caller set was ignored, a test's
    # "nothing left in TMPDIR" then true of a folder the command never used)
    tempfile.tempdir = None
    sys.argv = [str(ROOT / "gateway" / "__main__.py"), *req["argv"]]
    rc: Any = 0
    try:
        if req.get("script"):  # (`python SCRIPT ARGV...`)
            import runpy

            script = os.path.abspath(req["script"])
            sys.argv = [req["script"], *req["argv"]]
            sys.path[:] = [os.path.dirname(script), *(p for p in sys.path if p != str(ROOT))]
            runpy.run_path(script, run_name="__main__")
        else:
            from gateway.cli.main import main

            rc = main(req["argv"])
    except SystemExit as exc:
        rc = exc.code
    except BaseException:  # noqa: BLE001 - (printed as the interpreter prints an uncaught exception)
        import traceback

        traceback.print_exc()
        rc = 1
    if rc is None:
        rc = 0
    elif not isinstance(rc, int):  # (SystemExit("message"): printed, exit 1)
        print(rc, file=sys.stderr)
        rc = 1
    # (what the command left in reference cycles is finalized, as an interpreter's exit
    # finalizes it: an unclosed session's or file's complaint is printed, not lost in the
    # os._exit below; only the command's own objects: the server's are frozen)
    gc.collect()
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            f.flush()
    if out is None or err is None:
        _send(conn, {"rc": rc})
    else:
        out.seek(0)
        err.seek(0)
        _send(conn, {"rc": rc, "out": out.read().decode("utf-8", "replace"),
                     "err": err.read().decode("utf-8", "replace")})
    conn.close()
    os._exit(0)


def _die_with_the_server() -> None:
    """A streamed command (a drill) ends with the server, which ends with the test process
    (the server is single-threaded: PR_SET_PDEATHSIG is about it, not one of its threads)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _warm(gateway_path: Any) -> None:
    """Also import what commands import only when they run, once here rather than in each
    child: every other module of `gateway` (`check` alone loaded ~240 more: redis,
    cryptography, jwt, the OpenTelemetry SDK) and matplotlib with its Agg backend (each
    drill imported it to draw its timeline). Measured as the forked children's own CPU:
    123 commands of test_cli/check_review/config_hostile/admin_scoped_keys/keyed_audit
    6.0 s -> 1.25 s, test_drills' 20 drills 13.5 s -> 8.1 s; this costs the server ~1.1-1.5
    s once. Modules only: nothing is run, and a module that cannot be imported here (an
    optional extra missing) is left to the child, as before. `gateway.__main__` runs the
    CLI when imported: skipped."""
    import pkgutil

    for m in pkgutil.walk_packages(gateway_path, "gateway."):
        if m.name != "gateway.__main__":
            with contextlib.suppress(ImportError):
                __import__(m.name)
    with contextlib.suppress(ImportError):
        import matplotlib

        matplotlib.use("Agg")  # (as gateway/cli/drillplot.py does before pyplot)
        import matplotlib.pyplot


def serve(path: str) -> None:
    """The server: imports the CLI, then forks a child per connection on `path`."""
    sys.path[:] = [str(ROOT), *(p for p in sys.path if p not in ("", str(ROOT)))]
    import pkgutil

    import gateway
    import gateway.cli
    import gateway.cli.main

    for m in pkgutil.iter_modules(gateway.cli.__path__):
        __import__(f"gateway.cli.{m.name}")
    _warm(gateway.__path__)
    # (the imported modules' objects are left out of every collection from now on, in the
    # children too: a child's full collection walked and wrote them all, ~1 s loaded, each
    # page it touched copied from the server's)
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # (children are reaped by the kernel)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(64)
    print("ready", flush=True)
    while True:
        # (stdin is a pipe from the test process: its end, at that process's exit, is ours)
        ready, _, _ = select.select([lsock, 0], [], [])
        if 0 in ready and not os.read(0, 1):
            os._exit(0)
        if lsock not in ready:
            continue
        conn, _ = lsock.accept()
        if os.fork() == 0:
            lsock.close()
            try:
                _child(conn)
            finally:
                os._exit(1)
        conn.close()


# --------------------------------------------------------------------------- the test side


class _Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="kg-cli-")
        self.path = os.path.join(self.dir, "s")
        # (not PR_SET_PDEATHSIG: it fires when the *thread* that started the server ends,
        # an asyncio.to_thread worker gone with its test's loop; the server ends when its
        # stdin, a pipe from this process, does)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from tests.cli_fork import serve; serve({self.path!r})"],
            cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the CLI fork server did not start: {line!r}")
        atexit.register(self.close)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self.dir)


_server: _Server | None = None
_lock = threading.Lock()


def run(argv: list[str], env: dict[str, str], cwd: str,
        timeout: float, script: str | None = None) -> subprocess.CompletedProcess[str]:
    """`killgate *argv` with exactly `env` in `cwd`, as subprocess.run(capture_output=True,
    text=True, timeout=timeout) would give it. With `script` (a path): `python SCRIPT
    *argv` instead, run as __main__ with the script's folder first on sys.path, as the
    interpreter runs a script."""
    path = _server_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    pid = None
    try:
        sock.connect(path)
        _send(sock, {"argv": argv, "env": env, "cwd": cwd, "script": script})
        pid = _recv(sock)["pid"]
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        done = _recv(sock)
    except TimeoutError:
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        raise subprocess.TimeoutExpired(["killgate", *argv], timeout) from None
    finally:
        sock.close()
    return subprocess.CompletedProcess(["killgate", *argv], done["rc"],
                                       _newlines(done["out"]), _newlines(done["err"]))


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")  # (text=True's universal newlines)


def _server_path() -> str:
    global _server
    with _lock:
        if _server is None or _server.proc.poll() is not None:
            _server = _Server()
        return _server.path
