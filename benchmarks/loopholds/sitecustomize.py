"""What holds the loop, for benchmarks/loop_holds.py (never imported by killgate).

Put this folder first on PYTHONPATH with KG_HOLDS_OUT=<folder> and every `killgate serve`
started from that environment runs on a uvloop loop whose call_soon / call_later / call_at
time each callback they run (every task step goes through call_soon: its wake-up and each
step after), and gc.callbacks time each collection. At exit it writes
<folder>/holds-<pid>.json: per callback (a task's coroutine, with the coroutine it resumed
in), the number of runs, their CPU time (thread_time: the machine's other load left out)
and wall time, and every run over KG_HOLDS_US (100 µs) with its times; each collection's
generation and time, and whether it ran inside a callback. A callback costs ~1-2 µs more.
Callbacks uvloop makes itself (a protocol's data_received) are not timed.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import threading
import time

OUT = os.environ.get("KG_HOLDS_OUT")
LONG_NS = int(float(os.environ.get("KG_HOLDS_US", "100")) * 1000)
ALL = os.environ.get("KG_HOLDS_ALL") == "1"  # every run, with its start (time.time())


def _innermost(coro: object) -> str:
    """The coroutine a task step resumes in: its await chain's last Python frame."""
    last = coro
    for _ in range(64):
        nxt = getattr(last, "cr_await", None) or getattr(last, "gi_yieldfrom", None)
        if nxt is None or not (hasattr(nxt, "cr_frame") or hasattr(nxt, "gi_frame")):
            break
        last = nxt
    code = getattr(last, "cr_code", None) or getattr(last, "gi_code", None)
    if code is None:
        return "?"
    return f"{code.co_qualname} ({os.path.basename(code.co_filename)})"


def _name(cb: object) -> str:
    owner = getattr(cb, "__self__", None)
    get_coro = getattr(owner, "get_coro", None)
    if get_coro is not None:  # a task's step or wake-up
        coro = get_coro()
        code = getattr(coro, "cr_code", None)
        outer = code.co_qualname if code is not None else repr(coro)
        return f"task {outer} <- {_innermost(coro)}"
    q = getattr(cb, "__qualname__", None) or type(cb).__qualname__
    mod = getattr(cb, "__module__", None) or ""
    return f"{mod}.{q}"


class _Record:
    def __init__(self) -> None:
        self.agg: dict[str, list[int]] = {}  # name -> [runs, cpu ns, wall ns, max cpu ns]
        self.long: list[tuple[str, int, int, float]] = []  # name, cpu, wall, at
        self.gcs: list[tuple[int, int, int, float, str | None]] = []  # gen, cpu, wall, at, in
        self.threads: list[tuple[str, float, int, int]] = []  # executor work: name, at, cpu, wall
        self.runs: list[tuple[str, float, int, int]] = []  # KG_HOLDS_ALL: name, at, cpu, wall
        self.current: str | None = None
        self.started = time.time()

    def dump(self) -> None:
        if not OUT:
            return
        doc = {"pid": os.getpid(), "argv": sys.argv, "runs": self.runs, "started": self.started,
               "seconds": time.time() - self.started,
               "long_ns": LONG_NS, "agg": self.agg, "long": self.long, "gcs": self.gcs,
               "threads": self.threads}
        with open(os.path.join(OUT, f"holds-{os.getpid()}.json"), "w") as f:
            json.dump(doc, f)


REC = _Record()


def _timed(cb, name_of=_name):  # type: ignore[no-untyped-def]
    if getattr(cb, "_kg_timed", False):  # call_at goes through call_later
        return cb
    cpu, wall = time.thread_time_ns, time.perf_counter_ns

    def run(*args):  # type: ignore[no-untyped-def]
        name = name_of(cb)  # before the run: where the step resumes
        REC.current = name
        at = time.time()
        c0, w0 = cpu(), wall()
        try:
            return cb(*args)
        finally:
            c, w = cpu() - c0, wall() - w0
            REC.current = None
            a = REC.agg.get(name)
            if a is None:
                REC.agg[name] = [1, c, w, c]
            else:
                a[0] += 1
                a[1] += c
                a[2] += w
                if c > a[3]:
                    a[3] = c
            if ALL:
                REC.runs.append((name, at, c, w))
            if c > LONG_NS or w > LONG_NS * 10:
                REC.long.append((name, c, w, time.time() - REC.started))
    run._kg_timed = True  # type: ignore[attr-defined]
    return run


_gc_t: list[int] = [0, 0]
_MAIN = threading.get_ident()


def _gc_cb(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_t[0], _gc_t[1] = time.thread_time_ns(), time.perf_counter_ns()
        return
    inside = REC.current if threading.get_ident() == _MAIN else "a worker thread"
    REC.gcs.append((info["generation"], time.thread_time_ns() - _gc_t[0],
                    time.perf_counter_ns() - _gc_t[1], time.time() - REC.started, inside))


def _install() -> None:
    import uvloop

    class TimedLoop(uvloop.Loop):  # type: ignore[misc]
        __module__ = "uvloop.timed"  # (serving.py tells uvloop by its module)

        def call_soon(self, callback, *args, context=None):  # type: ignore[no-untyped-def]
            return super().call_soon(_timed(callback), *args, context=context)

        def run_in_executor(self, executor, func, *args):  # type: ignore[no-untyped-def]
            name = _name(func)
            inner = getattr(func, "func", None)  # to_thread: a partial of ctx.run
            if inner is not None and getattr(func, "args", None):
                name = _name(func.args[0])

            def timed(*a):  # type: ignore[no-untyped-def]
                at, c0, w0 = time.time(), time.thread_time_ns(), time.perf_counter_ns()
                try:
                    return func(*a)
                finally:
                    REC.threads.append((name, at, time.thread_time_ns() - c0,
                                        time.perf_counter_ns() - w0))
            return super().run_in_executor(executor, timed, *args)

        def call_later(self, delay, callback, *args, context=None):  # type: ignore[no-untyped-def]
            return super().call_later(delay, _timed(callback), *args, context=context)

        def call_at(self, when, callback, *args, context=None):  # type: ignore[no-untyped-def]
            return super().call_at(when, _timed(callback), *args, context=context)

    uvloop.EventLoopPolicy._loop_factory = lambda self: TimedLoop()
    gc.callbacks.append(_gc_cb)
    atexit.register(REC.dump)


if OUT:
    _install()
