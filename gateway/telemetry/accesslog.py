"""The access log: one JSON line per request (`server.access_log: true`), sampled.

Owns `AccessLog`, a recorder (telemetry/record.py) whose `done` only samples and appends
the finished request's record to a bounded buffer — no formatting, no I/O on the request
path; a full buffer drops the line and counts it. A writer thread formats and writes the
buffered lines (to standard output or `telemetry.access_log.path`) every `FLUSH` seconds,
so a slow or blocked output never stalls the event loop. Before each write, a file is reopened
when its path no longer names it (renamed by logrotate, or removed). To a pipe or a socket
(`serve --workers N` share standard output), lines go out in writes of whole lines of at
most PIPE_BUF bytes, which POSIX never interleaves with another process's writes (a longer
write to a full pipe is split, and tears lines).
Client-sent values (path, request id) are JSON-escaped: a line is always one line. Write
failures are counted (the thread counts under its own label keys, so the loop's increments
are never raced).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import select
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from gateway.config_telemetry import AccessLogConfig
from gateway.errors import ConfigError, Problem
from gateway.log import event
from gateway.telemetry.accessline import MAX_PATH, MAX_REQUEST_ID, cut, line
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import RequestRecord

__all__ = ["AccessLog"]

log = logging.getLogger("killgate.accesslog")

FLUSH = 0.05  # seconds between writes
ATOMIC = select.PIPE_BUF  # bytes a write to a pipe puts in one piece (4096 on Linux)


def _pieces(lines: list[str]) -> Iterator[tuple[str, int]]:
    """(text, lines in it): whole lines, at most ATOMIC bytes a piece (a longer line alone).
    Lines are ASCII: a character is a byte."""
    start, size = 0, 0
    for i, ln in enumerate(lines):
        n = len(ln) + 1
        if i > start and size + n > ATOMIC:
            yield "\n".join(lines[start:i]) + "\n", i - start
            start, size = i, 0
        size += n
    if start < len(lines):
        yield "\n".join(lines[start:]) + "\n", len(lines) - start


def _stream(out: IO[str]) -> bool:
    """Whether `out` is a pipe or a socket (where a long write may be torn)."""
    try:
        mode = os.fstat(out.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _why(exc: OSError, path: Path | None) -> str:
    """What an ENXIO at the open means: a FIFO no process reads, or a socket (/dev/stdout
    under systemd is the journal's), which no open() takes."""
    try:
        mode = os.stat(path).st_mode if path and exc.errno == errno.ENXIO else 0
    except OSError:
        mode = 0
    if stat.S_ISFIFO(mode):
        return "; it is a FIFO no process reads: start its reader first, or name a file"
    if stat.S_ISSOCK(mode):
        return ("; it is a socket, which cannot be opened as a file (/dev/stdout is one under "
                "systemd, the journal's): leave telemetry.access_log.path unset to write to "
                "standard output, or name a file")
    return ""


class AccessLog:
    """Recorder writing the access log (see the module docstring)."""

    def __init__(self, cfg: AccessLogConfig, metrics: Metrics, resolve: Callable[[str], Path],
                 rand: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.detailed = True  # (read on every request: see RequestStats.__init__)
        self.ratio = cfg.sample_ratio
        self.cap = cfg.buffer
        self.metrics = metrics
        self.path = resolve(cfg.path) if cfg.path else None
        self.rand = rand
        # loop time (monotonic) -> Unix time, without a clock call per request; taken again
        # at each write, so that a step of the wall clock (NTP's first sync after boot, a VM
        # resumed) shows in the lines within one flush, not never
        self.clock, self.wall = clock, wall
        self.offset = wall() - clock()
        self._buf: deque[RequestRecord] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error = 0.0
        # there at 0 from the start (the first drop must show to increase()), and made here,
        # on the loop: the writer thread only adds to series that exist
        metrics.inc("killgate_access_log_lines_total", by=0)
        for reason in ("buffer_full", "write_failed"):
            metrics.inc("killgate_access_log_dropped_total", (reason,), by=0,
                        label_names=("reason",))

    # ------------------------------------------------------------------ request path

    def done(self, rec: RequestRecord) -> None:
        if self.ratio < 1.0 and self.rand() >= self.ratio:
            return
        buf = self._buf
        if len(buf) >= self.cap:
            self.metrics.inc("killgate_access_log_dropped_total", ("buffer_full",),
                             label_names=("reason",))
            return
        if len(rec.path) > MAX_PATH or len(rec.request_id) > MAX_REQUEST_ID:
            cut(rec)
        buf.append(rec)  # (deque.append is atomic: the writer thread pops concurrently)

    # ------------------------------------------------------------------ writer

    @staticmethod
    def _open(path: Path) -> IO[str]:
        # (O_NONBLOCK: opening a FIFO no process reads waits for a reader otherwise, and
        # serve's start hung there for ever, SIGTERM held, nothing said; ENXIO now. A
        # pipe a log shipper reads opens; writes block again once it is open)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o666)
        try:
            os.set_blocking(fd, True)
            return open(fd, "a", encoding="ascii", buffering=1 << 16)
        except BaseException:
            os.close(fd)
            raise

    def start(self) -> None:
        try:
            out: IO[str] = self._open(self.path) if self.path is not None else sys.stdout
        except OSError as exc:  # (a start refused with the setting named, not a traceback)
            why = _why(exc, self.path)
            raise ConfigError([Problem("telemetry.access_log.path",
                                       f"{self.path}: cannot be opened for appending "
                                       f"({exc.strerror or exc}){why}")]) from None
        self._thread = threading.Thread(target=self._run, args=(out,), name="access-log",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is buffered (within `timeout`), then stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self, out: IO[str]) -> None:
        try:
            while not self._stop.wait(FLUSH):
                out = self._current(out)
                self._flush(out)
            out = self._current(out)
            self._flush(out)
        finally:
            if out is not sys.stdout:
                with contextlib.suppress(OSError, ValueError):  # (counted at the write)
                    out.close()

    def _current(self, out: IO[str]) -> IO[str]:
        """`out`, or a new file at the path when the path no longer names `out`'s file."""
        path = self.path
        if path is None or not self._buf:
            return out
        try:
            own = os.fstat(out.fileno())
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                return out
        except FileNotFoundError:
            pass  # removed: write a new one
        except (OSError, ValueError):
            return out  # (cannot tell: keep writing where we are)
        try:
            new = self._open(path)
        except OSError as exc:
            self._error(exc)
            return out
        with contextlib.suppress(OSError, ValueError):
            out.close()
        event(log, "access_log_reopened", path=str(path))
        return new

    def _error(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error > 10:
            self._last_error = now
            event(log, "access_log_write_failed", logging.ERROR, error=str(exc),
                  path=str(self.path or "stdout"))

    def _flush(self, out: IO[str]) -> None:
        buf = self._buf
        if not buf:
            return
        lines = []
        offset = self.offset = self.wall() - self.clock()
        while buf:
            rec = buf.popleft()
            lines.append(line(rec, rec.end + offset))
        pieces = (_pieces(lines) if _stream(out)
                  else (("\n".join(lines) + "\n", len(lines)),))  # (a file: one write)
        written = 0
        try:
            for text, n in pieces:
                out.write(text)
                out.flush()
                written += n
        except (OSError, ValueError) as exc:
            self.metrics.inc("killgate_access_log_dropped_total", ("write_failed",),
                             label_names=("reason",), by=len(lines) - written)
            self._error(exc)
        if written:
            self.metrics.inc("killgate_access_log_lines_total", by=written)

    async def aclose(self) -> None:
        """`stop` from the event loop without blocking it."""
        await asyncio.to_thread(self.stop)

