"""`killgate ...` forked from the CLI fork server (tests/cli_fork.py) and read as it runs:
`spawn()` is subprocess.Popen(stdout=PIPE, stderr=PIPE, text=True) for a drill (its lines
as they come, SIGINT, SIGKILL), and `close_all()` (tests/conftest.py, at the end of each
test) closes whatever a test left running or open."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from typing import Any

from tests.cli_fork import Forked, _recv, _send, _server_path

#: every Spawned whose pipes are still open: close_all() (tests/conftest.py runs it at the
#: end of each test) kills and closes them. Held here, a failed test's are never garbage
#: collected unclosed (that ResourceWarning fired in whichever later test collected them,
#: failing it under filterwarnings=error)
_open: set[Spawned] = set()


def close_all() -> None:
    """Kill every spawned command still running and close every pipe still open."""
    for proc in list(_open):
        proc.close()


class Spawned(Forked):
    """`killgate *argv` started as subprocess.Popen(stdout=PIPE, stderr=PIPE, text=True)
    starts it, forked from the server: stdout and stderr are pipes read as the command
    writes them; poll, wait, communicate, kill and send_signal as Popen's. (Its exit code
    comes over the server's socket: the child is the server's, not ours; one killed by a
    signal before it answered has -signal, as Popen says it.) Unlike Popen's, its pipes are
    closed for the caller: by communicate(), close(), leaving `with`, or at the end of the
    test (close_all), whichever comes first; a caller that fails before reading them leaks
    nothing into a later test."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.args = ["killgate", *argv]
        self.returncode = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(_server_path())
        _send(sock, {"argv": argv, "env": env, "cwd": cwd, "stream": True})
        rout, wout = os.pipe()
        rerr, werr = os.pipe()
        try:
            socket.send_fds(sock, [b"F"], [wout, werr])
        finally:
            os.close(wout)
            os.close(werr)
        self.pid: int = _recv(sock)["pid"]
        self.stdout = open(rout)  # noqa: SIM115 - closed by communicate() or the caller
        self.stderr = open(rerr)  # noqa: SIM115
        _open.add(self)
        self._watch(sock)

    def __enter__(self) -> Spawned:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill it if it still runs (and wait for its end), close both pipes. Idempotent."""
        if self.returncode is None:
            self.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(5)
        for f in (self.stdout, self.stderr):
            f.close()
        _open.discard(self)

    def communicate(self, input: str | None = None,
                    timeout: float | None = None) -> tuple[str, str]:
        assert input is None
        got: dict[str, str] = {}

        def read(name: str, f: Any) -> None:
            got[name] = f.read()
            f.close()

        readers = [threading.Thread(target=read, args=(n, f), daemon=True)
                   for n, f in (("out", self.stdout), ("err", self.stderr)) if not f.closed]
        for t in readers:
            t.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in readers:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        _open.discard(self)  # (both pipes read to their end and closed)
        return got.get("out", ""), got.get("err", "")


def spawn(argv: list[str], env: dict[str, str], cwd: str) -> Spawned:
    return Spawned(argv, env, cwd)
