"""Callgrind windows on a kill's path, for benchmarks/kill_serve_instructions.py (never
imported by killgate).

Put this folder first on PYTHONPATH with KG_COUNT_LIB=<helper .so> and every `killgate
serve` started from that environment (under `valgrind --tool=callgrind --instr-atstart=no
--collect-atstart=no`) counts, with callgrind's client requests, only the kill's own work:

* the committer, from the admin connection's read of a `POST /v1/kill` or `/v1/unkill`
  request: that read, then each step of the connection's task and of the request's
  handler task (driven step by step here), and, once the commit is sent, each read of a
  redis connection (the commit's reply, which puts it in force here; its echo; the
  fleet's acks) until the answer is written (before it, a read is another task's: a
  heartbeat's reply, a late ack). Cut in two at the commit's EVALSHA (the script naming the events
  channel): `c_pre` (the HTTP read to the commit leaving) and `c_post` (the rest). What
  else the loop runs meanwhile (timers, the sync loop, other tasks the write spawned: its
  ack, its snapshot) is not counted: under valgrind a call lasts long enough for those
  to add ~1M instructions of noise a call;
* a receiver: the subscriber connection's read of a pushed document, to the return of that
  read (`r_apply_<generation>`): the document verified, decoded and swapped in (a kill is
  in force when it returns; its ack, sent ACK_AFTER later, is not counted); a push that
  would relax the state is only a hint (`r_hint_<generation held>`: the store's re-read
  that follows is not counted).

Instrumentation starts with the first such window (the harness drops the first calls).
KG_COUNT_PROFILE / KG_COUNT_OPCODES (no valgrind): cProfile, or bytecodes per function,
over the same windows.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

LIB = os.environ.get("KG_COUNT_LIB")
#: instead of callgrind: cProfile over the same windows, its stats written here at exit
PROFILE = os.environ.get("KG_COUNT_PROFILE")
#: ... or bytecodes executed per function over the same windows (JSON written here at exit)
OPCODES = os.environ.get("KG_COUNT_OPCODES")


class _Opcodes:
    """The helper's calls over a bytecode count (sys.settrace with f_trace_opcodes): per
    function, the bytecodes each window kind ran, which is what the interpreter's share of
    the instructions follows (deterministic, unlike cProfile's times)."""

    def __init__(self, out: str) -> None:
        import atexit
        self.counts: dict[str, dict[str, int]] = {"pre": {}, "post": {}, "r_apply": {},
                                                  "r_hint": {}, "windows": {}}
        self.cur = self.counts["pre"]
        self.on = False
        atexit.register(self._save, out)

    def _save(self, out: str) -> None:
        import json
        with open(f"{out}.{os.getpid()}", "w") as f:
            json.dump(self.counts, f)

    def _trace(self, frame, what, arg):  # type: ignore[no-untyped-def]
        frame.f_trace_opcodes = True
        if what == "opcode":
            code = frame.f_code
            key = f"{code.co_filename}:{code.co_firstlineno}({code.co_name})"
            if code.co_filename == "<string>":  # (a dataclass's made-up method: whose)
                key += f" {type(frame.f_locals.get('self')).__name__}"
            self.cur[key] = self.cur.get(key, 0) + 1
        return self._trace

    def kg_start(self) -> None:
        pass

    def kg_zero(self) -> None:
        self.cur = self.counts["pre"]  # (a window begins)

    def kg_toggle(self) -> None:
        self.on = not self.on
        sys.settrace(self._trace if self.on else None)

    def kg_dump(self, name: bytes) -> None:
        if name == b"c_pre" and self.on:
            self.cur = self.counts["post"]
        elif name.startswith(b"r_"):  # a receiver's window: its own kind (apply, hint)
            kind = "r_apply" if name.startswith(b"r_apply") else "r_hint"
            into = self.counts[kind]
            for key, n in self.cur.items():
                into[key] = into.get(key, 0) + n
            self.counts["windows"][kind] = self.counts["windows"].get(kind, 0) + 1
            self.cur.clear()


class _Profiled:
    """The helper's four calls over cProfile (the windows' Python functions, by name): one
    profile per window kind, `pre` (to the c_pre dump) and `post` (the rest)."""

    def __init__(self, out: str) -> None:
        import atexit
        import cProfile
        self.profs = {"pre": cProfile.Profile(), "post": cProfile.Profile()}
        self.cur = self.profs["pre"]
        self.on = False
        atexit.register(self._save, out)

    def _save(self, out: str) -> None:
        for name, prof in self.profs.items():
            prof.dump_stats(f"{out}-{name}.{os.getpid()}")

    def kg_start(self) -> None:
        pass

    def kg_zero(self) -> None:
        pass

    def kg_toggle(self) -> None:
        self.on = not self.on
        if self.on:
            self.cur.enable()
        else:
            self.cur.disable()
            self.cur = self.profs["pre"]

    def kg_dump(self, name: bytes) -> None:
        if name == b"c_pre" and self.on:
            self.cur.disable()
            self.cur = self.profs["post"]
            self.cur.enable()


def _install() -> None:
    from aiohttp import web_protocol

    from gateway.state import resp, sync

    lib = (_Profiled(PROFILE) if PROFILE else _Opcodes(OPCODES) if OPCODES
           else ctypes.CDLL(LIB))  # type: ignore[arg-type]
    started = [False]
    on = [False]

    def begin() -> None:
        if not started[0]:
            lib.kg_start()
            started[0] = True
        if not on[0]:
            lib.kg_zero()
            lib.kg_toggle()
            on[0] = True

    def resume() -> None:
        if not on[0]:
            lib.kg_toggle()
            on[0] = True

    def pause() -> None:
        if on[0]:
            lib.kg_toggle()
            on[0] = False

    def end(name: str) -> None:
        if on[0]:
            lib.kg_toggle()
            on[0] = False
            lib.kg_dump(name.encode())

    committing = [False]
    sent = [False]  # the commit's script is sent: redis reads are the kill's from then on
    orig_rd = web_protocol.RequestHandler.data_received

    def rd(self, data):  # type: ignore[no-untyped-def]
        was = on[0]  # (also called from within a counted step: it stays counted)
        if data.startswith((b"POST /v1/kill", b"POST /v1/unkill")):
            committing[0], sent[0] = True, False
            begin()
        try:
            return orig_rd(self, data)
        finally:
            if not was:
                pause()  # (the connection's task goes on with the call: its steps are counted)
    web_protocol.RequestHandler.data_received = rd  # type: ignore[method-assign]

    async def stepped(coro):  # type: ignore[no-untyped-def]
        # a coroutine driven step by step: while a call is being committed, each of its
        # steps is counted, and nothing else the loop runs between them
        value: object = None
        thrown: BaseException | None = None
        while True:
            if committing[0]:
                resume()
            try:
                fut = coro.send(value) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                pause()
                return stop.value
            except BaseException:
                pause()
                raise
            pause()
            value, thrown = None, None
            try:
                value = await _Yield(fut)
            except BaseException as exc:  # noqa: BLE001 - thrown into the coroutine
                thrown = exc

    # the connection's task (reads the request, awaits its handler's) and the handler's
    orig_start = web_protocol.RequestHandler.start
    orig_handle = web_protocol.RequestHandler._handle_request

    async def start(self):  # type: ignore[no-untyped-def]
        return await stepped(orig_start(self))

    async def handle(self, *args):  # type: ignore[no-untyped-def]
        return await stepped(orig_handle(self, *args))
    web_protocol.RequestHandler.start = start  # type: ignore[method-assign]
    web_protocol.RequestHandler._handle_request = handle  # type: ignore[method-assign]

    orig_fin = web_protocol.RequestHandler.finish_response

    @functools.wraps(orig_fin)
    async def fin(self, request, resp_, start_time):  # type: ignore[no-untyped-def]
        try:
            return await orig_fin(self, request, resp_, start_time)
        finally:
            if committing[0]:
                committing[0] = False
                end("c_post")
    web_protocol.RequestHandler.finish_response = fin  # type: ignore[method-assign]

    orig_send = resp.RespConnection.send

    def send(self, *args, on_reply=None):  # type: ignore[no-untyped-def]
        if committing[0] and args and args[0] in ("EVALSHA", "EVAL") \
                and any(type(a) is str and a.endswith(":events") for a in args):
            lib.kg_dump(b"c_pre")  # the commit's script (dumps and zeroes; collection goes on)
            sent[0] = True
        return orig_send(self, *args, on_reply=on_reply)
    resp.RespConnection.send = send  # type: ignore[method-assign]

    orig_rx = resp.RespConnection.data_received

    def data_received(self, data):  # type: ignore[no-untyped-def]
        if committing[0] and sent[0]:  # (the commit's reply, which puts it in force here;
            was = on[0]  # its echo; the fleet's acks its answer waits for)
            resume()
            try:
                return orig_rx(self, data)
            finally:
                if not was:
                    pause()
        if committing[0] or self._on_message is None or b":events\r\n" not in data:
            return orig_rx(self, data)
        holder = sync_ref[0]
        before = holder.holder.doc.generation if holder is not None else -1  # type: ignore[attr-defined]
        begin()
        try:
            return orig_rx(self, data)
        finally:
            after = holder.holder.doc.generation if holder is not None else -1  # type: ignore[attr-defined]
            # applied (a kill), or a hint only (an unkill: the store is re-read, uncounted)
            end(f"r_apply_{after}" if after != before else f"r_hint_{before}")
    resp.RespConnection.data_received = data_received  # type: ignore[method-assign]

    sync_ref: list[object] = [None]
    orig_init = sync.Sync.__init__

    def init(self, *a, **k):  # type: ignore[no-untyped-def]
        orig_init(self, *a, **k)
        sync_ref[0] = self
    sync.Sync.__init__ = init  # type: ignore[method-assign]



class _Yield:
    """Await a future a coroutine yielded, as the Task driving it would have."""

    def __init__(self, fut: object) -> None:
        self.fut = fut

    def __await__(self):  # type: ignore[no-untyped-def]
        return (yield self.fut)


if (LIB or PROFILE or OPCODES) and "serve" in sys.argv:
    if sys.argv[:1] == ["-m"] and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _install()
