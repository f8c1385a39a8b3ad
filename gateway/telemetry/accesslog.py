"""The access log: one JSON line per request (`server.access_log: true`), sampled.

Owns `AccessLog`, a recorder (telemetry/record.py) whose `done` only samples and appends
the finished request's record to a bounded buffer — no formatting, no I/O on the request
path; a full buffer drops the line and counts it. A writer thread formats and writes the
buffered lines (to standard output or `telemetry.access_log.path`) every `FLUSH` seconds,
so a slow or blocked output never stalls the event loop. Client-sent values (path,
request id) are JSON-escaped: a line is always one line. Write failures are counted (the
thread counts under its own label keys, so the loop's increments are never raced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from json.encoder import encode_basestring_ascii as dumps  # (a str in quotes)
from pathlib import Path
from typing import IO

from gateway.config_telemetry import AccessLogConfig
from gateway.log import event
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import RequestRecord, arm_of

__all__ = ["AccessLog", "line"]

log = logging.getLogger("killgate.accesslog")

FLUSH = 0.05  # seconds between writes
MAX_PATH = 1024


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@lru_cache(maxsize=8)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def _name(v: str) -> str:
    """A config name or an enum (route and version names allow only [A-Za-z0-9_.-]): no
    escaping needed. Empty is null."""
    return f'"{v}"' if v else "null"


def _text(v: str) -> str:
    """Anything a client sent: JSON-escaped, ASCII only. Empty is null."""
    return dumps(v) if v else "null"


def line(rec: RequestRecord, wall: float) -> str:
    """One request as one JSON line (`wall`: the Unix time it finished). Built by hand:
    json.dumps of a dict and datetime formatting cost several times more, in the thread
    that shares the GIL with the event loop."""
    sec = int(wall)
    up = rec.upstream
    fb = rec.first_byte
    return (f'{{"time":"{_second(sec)}.{int((wall - sec) * 1000):03d}Z",'
            f'"route":{_name(rec.route)},"version":{_name(rec.version)},'
            f'"decision":{_name(rec.decision)},'
            f'"arm":{_name(arm_of(rec.decision, rec.version, rec.stable))},'
            f'"status":{rec.status},"duration_ms":{_ms(rec.end - rec.start)!r},'
            f'"upstream_ms":{repr(_ms(up)) if up >= 0 else "null"},'
            f'"ttfb_ms":{repr(_ms(fb - rec.start)) if fb else "null"},'
            f'"bytes_in":{rec.bytes_in},"bytes_out":{rec.bytes_out},'
            f'"client":{_text(rec.peer)},"method":{dumps(rec.method)},'
            f'"path":{dumps(rec.path[:MAX_PATH])},"request_id":{_text(rec.request_id[:128])},'
            f'"trace_id":{_text(rec.trace_id)}}}')


class AccessLog:
    """Recorder writing the access log (see the module docstring)."""

    detailed = True

    def __init__(self, cfg: AccessLogConfig, metrics: Metrics, resolve: Callable[[str], Path],
                 rand: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = cfg.sample_ratio
        self.cap = cfg.buffer
        self.metrics = metrics
        self.path = resolve(cfg.path) if cfg.path else None
        self.rand = rand
        # loop time (monotonic) -> Unix time, without a clock call per request
        self.offset = time.time() - clock()
        self._buf: deque[RequestRecord] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error = 0.0

    # ------------------------------------------------------------------ request path

    def done(self, rec: RequestRecord) -> None:
        if self.ratio < 1.0 and self.rand() >= self.ratio:
            return
        buf = self._buf
        if len(buf) >= self.cap:
            self.metrics.inc("killgate_access_log_dropped_total", ("buffer_full",),
                             label_names=("reason",))
            return
        buf.append(rec)  # (deque.append is atomic: the writer thread pops concurrently)

    # ------------------------------------------------------------------ writer

    def start(self) -> None:
        out: IO[str] = (open(self.path, "a", encoding="ascii", buffering=1 << 16)  # noqa: SIM115
                        if self.path is not None else sys.stdout)
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
                self._flush(out)
            self._flush(out)
        finally:
            if out is not sys.stdout:
                with contextlib.suppress(OSError, ValueError):  # (counted at the write)
                    out.close()

    def _flush(self, out: IO[str]) -> None:
        buf = self._buf
        if not buf:
            return
        lines = []
        offset = self.offset
        while buf:
            rec = buf.popleft()
            lines.append(line(rec, rec.end + offset))
        try:
            out.write("\n".join(lines) + "\n")
            out.flush()
        except (OSError, ValueError) as exc:
            self.metrics.inc("killgate_access_log_dropped_total", ("write_failed",),
                             label_names=("reason",), by=len(lines))
            now = time.monotonic()
            if now - self._last_error > 10:
                self._last_error = now
                event(log, "access_log_write_failed", logging.ERROR, error=str(exc),
                      path=str(self.path or "stdout"))
            return
        self.metrics.inc("killgate_access_log_lines_total", by=len(lines))

    async def aclose(self) -> None:
        """`stop` from the event loop without blocking it."""
        await asyncio.to_thread(self.stop)

