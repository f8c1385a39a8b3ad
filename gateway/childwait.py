"""The supervisor's sleep: until a child exits or a signal comes, with no signal lost.

A blocking `waitid` alone has a window: a signal that lands after the supervisor's last
check and before the call has its Python handler run only once the call returns, i.e.
once some child exits; a SIGTERM there was forwarded to no worker until then. Here every
signal with a Python handler writes a byte, at C level, into a pipe
(`signal.set_wakeup_fd`): the sleep is a `select` on that pipe, so a signal that came at
any moment since the last sleep ends the next one at once. SIGCHLD gets a handler too
(that does nothing) so that a child's exit writes its byte; an ignored SIGCHLD inherited
across exec would instead have the kernel reap children unseen. Children that are not
workers are reaped here; an exited worker is left for `Popen.poll`, which reports its code.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["ChildWait"]

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _nothing(_sig: int, _frame: FrameType | None) -> None:
    """SIGCHLD's handler: its byte in the wake-up pipe is the point."""


class ChildWait:
    """Install with `open()` (main thread, before the first child), `sleep()` in the
    supervisor's loop, `close()` at the end (the previous wake-up fd and SIGCHLD back)."""

    def __init__(self) -> None:
        self._r = self._w = -1
        self._previous_fd = -1
        self._previous_chld: Handler = signal.SIG_DFL

    def open(self) -> ChildWait:
        self._r, self._w = os.pipe()
        for fd in (self._r, self._w):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        self._previous_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._previous_chld = signal.signal(signal.SIGCHLD, _nothing)
        return self

    def close(self) -> None:
        if self._w < 0:
            return
        signal.signal(signal.SIGCHLD, self._previous_chld)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._r)
        os.close(self._w)
        self._r = self._w = -1

    def sleep(self, workers: set[int], fds: set[int] | frozenset[int] = frozenset(),
              timeout: float | None = None) -> None:
        """Return once some child has exited or a signal has come (the handlers have run,
        or run at the next bytecode) since the last call, or one of `fds` can be read, or
        `timeout` seconds have passed; at once if any already has."""
        if self._reap_strays(workers):
            return  # a worker has exited: the caller's poll reaps it
        waiting = select.poll()  # (not select: no FD_SETSIZE limit on a large group's fds)
        for fd in (self._r, *fds):
            waiting.register(fd, select.POLLIN)
        # (EINTR: the handler runs, then it polls again)
        waiting.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 256):
                pass
        self._reap_strays(workers)

    @staticmethod
    def _reap_strays(workers: set[int]) -> bool:
        """Reap exited children that are not workers; True when a worker has exited."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True  # no child at all: nothing to sleep for
            if info is None:
                return False  # children, none exited
            if info.si_pid in workers:
                return True
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, 0)
