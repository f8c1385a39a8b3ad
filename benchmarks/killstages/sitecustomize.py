"""Stage stamps on a kill's path, for benchmarks/kill_stages.py (never imported by killgate).

Put this folder first on PYTHONPATH with KG_STAGES_OUT=<folder> and every `killgate serve`
started from that environment wraps the functions targets.py names and stamps
`time.monotonic_ns()` (CLOCK_MONOTONIC: one clock for every process of the host, the
client's `sent_mono` included) at each stage of a kill:

* on the instance the call reaches (the committer): the admin connection's read of a
  `POST /v1/kill` or `/v1/unkill`, the request's task started (aiohttp: a task a request,
  two loop turns after the read), the handler's entry (past aiohttp's middlewares), the
  token checked, the body read, the state's `write`, the store's `commit`, the change
  sealed (`seal_commit`), the commit's EVALSHA sent and written, the read that brought its reply and
  the reply parsed, and the swap (`AppliedLog.later`: the instant `state_applied.applied_at`
  is taken);
* on the others (receivers): the subscriber's read of the pushed document, its signature
  checked (`Keyring.open`, entry and exit), its decoding, and the swap.

The stamps of each kill are kept by generation and written to <folder>/stages-<pid>.json at
exit. A hooked function that no longer exists ends the process at once (exit 3, its name
on stderr): stamps that hook nothing made kill_stages.py print `n=0` for weeks. Other
processes (the floor's, the client's) are left alone.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import sys
import time
from typing import Any

OUT = os.environ.get("KG_STAGES_OUT")


def _install(out: str) -> None:
    from targets import MissingTarget, resolve  # (this folder is first on the path)

    now = time.monotonic_ns
    # the kill this instance commits: its stamps, while one is under way
    mine: list[tuple[str, int]] = []
    active = [False]
    after = [False]  # the committer, from its swap to its answer's wait for the fleet
    rx = [0]  # when the redis read running now began
    push: list[tuple[str, int]] | None = None  # a pushed document's stamps, while read
    committer: dict[int, list[tuple[str, int]]] = {}
    receiver: dict[int, list[tuple[str, int]]] = {}
    fns: dict[str, Any] = {}

    for module, path in _targets():
        try:
            owner, name, fn = resolve(module, path)
        except MissingTarget as exc:
            sys.stderr.write(f"killstages: {exc}\n")
            sys.stderr.flush()
            os._exit(3)
        fns[path] = (owner, name, fn)

    def mark(name: str) -> None:
        if push is not None:
            push.append((name, now()))
        elif active[0] or (after[0] and name.startswith("after.")):
            mine.append((name, now()))

    def wrap(path: str, before: str | None, after: str | None) -> None:
        owner, name, fn = fns[path]
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def aw(*a: Any, **k: Any) -> Any:
                if before:
                    mark(before)
                try:
                    return await fn(*a, **k)
                finally:
                    if after:
                        mark(after)
            setattr(owner, name, aw)
        else:
            @functools.wraps(fn)
            def w(*a: Any, **k: Any) -> Any:
                if before:
                    mark(before)
                try:
                    return fn(*a, **k)
                finally:
                    if after:
                        mark(after)
            setattr(owner, name, w)

    # ---- the committer
    owner, name, orig_admin_rx = fns["RequestHandler.data_received"]

    def admin_rx(self: Any, data: bytes) -> Any:
        nonlocal mine
        if data.startswith((b"POST /v1/kill", b"POST /v1/unkill")):
            mine = [("admin.read", now())]
            active[0], after[0] = True, False
        return orig_admin_rx(self, data)
    setattr(owner, name, admin_rx)
    wrap("RequestHandler._handle_request", "admin.request_task", None)
    wrap("ActionsApi._action", "handler.entered", None)
    wrap("Callers.authorize", None, "handler.authorized")
    wrap("json_body", None, "handler.body_read")
    wrap("Sync.write", "write.entered", None)
    wrap("RedisStore.commit", "commit.entered", "after.commit_returned")
    wrap("seal_commit", None, "commit.sealed")
    wrap("RedisLink._script", None, "after.script_returned")
    owner, name, orig_send = fns["RespConnection.send"]

    def send(self: Any, *args: Any, on_reply: Any = None) -> Any:
        if not (active[0] and args[:1] in (("EVALSHA",), ("EVAL",))
                and any(type(a) is str and a.endswith(":events") for a in args)):
            return orig_send(self, *args, on_reply=on_reply)
        mine.append(("commit.evalsha_send", now()))
        try:
            return orig_send(self, *args, on_reply=on_reply)
        finally:  # (past the write: a CPU shared with redis may have run it meanwhile)
            mine.append(("commit.evalsha_written", now()))
    setattr(owner, name, send)
    owner, name, orig_replied = fns["_Own.replied"]

    def replied(self: Any, reply: Any) -> Any:
        if active[0]:
            mine.append(("commit.reply_rx", rx[0]))
            mine.append(("commit.reply_parsed", now()))
        return orig_replied(self, reply)
    setattr(owner, name, replied)

    # ---- a receiver (and the committer's echo)
    owner, name, orig_rx = fns["RespConnection.data_received"]

    def data_received(self: Any, data: bytes) -> Any:
        nonlocal push
        rx[0] = now()
        if self._on_message is None:
            was = after[0]
            try:
                return orig_rx(self, data)
            finally:
                if after[0] and not was:  # (the read that brought our commit's reply)
                    mine.append(("after.reply_done", now()))
        if b":events\r\n" not in data:
            return orig_rx(self, data)
        if after[0]:  # (our commit's echo, once its reply put it in force)
            mine.append(("after.echo_rx", rx[0]))
            try:
                return orig_rx(self, data)
            finally:
                mine.append(("after.echo_done", now()))
        push = [("push.rx", rx[0])]
        try:
            return orig_rx(self, data)
        finally:
            push = None
    setattr(owner, name, data_received)
    wrap("Keyring.open", "push.verify_begin", "push.verified")
    wrap("SharedDecoder.decode", None, "push.decoded")

    # ---- both: the swap, when `state_applied.applied_at` is taken
    owner, name, orig_later = fns["AppliedLog.later"]

    def later(self: Any, generation: int, *a: Any, **k: Any) -> Any:
        t = now()
        if active[0]:  # (our commit, by its reply or, read first, its echo)
            if push is not None:
                mine.append(("commit.echo_rx", push[0][1]))
            mine.append(("applied", t))
            if generation not in committer:
                committer[generation] = mine  # (the stamps `after` it go on to the receipt)
                after[0] = True
            active[0] = False
        elif push is not None:
            push.append(("applied", t))
            receiver.setdefault(generation, list(push))
        return orig_later(self, generation, *a, **k)
    setattr(owner, name, later)

    owner, name, orig_receipt = fns["Fleet.receipt"]

    async def receipt(self: Any, *a: Any, **k: Any) -> Any:
        if after[0]:
            mine.append(("after.receipt_wait", now()))
            after[0] = False
        return await orig_receipt(self, *a, **k)
    setattr(owner, name, receipt)

    def dump() -> None:
        with open(os.path.join(out, f"stages-{os.getpid()}.json"), "w") as f:
            json.dump({"committer": committer, "receiver": receiver}, f)
    atexit.register(dump)


def _targets() -> tuple[tuple[str, str], ...]:
    from targets import TARGETS
    return TARGETS


if OUT and "serve" in sys.argv:
    # `python -m gateway` puts the working directory first on sys.path only after site
    # runs: without this, the stamps would wrap the installed (editable) tree's gateway,
    # and the instances would run it instead of the one the benchmark started from
    if sys.argv[:1] == ["-m"] and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _install(OUT)
