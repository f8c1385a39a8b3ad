"""Stage stamps on a kill's path, for benchmarks/kill_stages.py (never imported by killgate).

Put this folder first on PYTHONPATH with KG_STAGES_OUT=<folder> and every `killgate serve`
started from that environment wraps a few functions of the kill path (admin handler, the
write, the commit, the push's read, verification, decoding, the table swap) to stamp
`time.time_ns()` at entry or exit, and writes the stamps per generation to
<folder>/stages-<pid>.json at exit. Each stamp costs ~1 µs. Other processes (the floor's,
the client's) are left alone.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time

OUT = os.environ.get("KG_STAGES_OUT")


def _install() -> None:
    from gateway.admin import actions as actions_mod
    from gateway.admin import api, callers, inputs
    from gateway.control import table as table_mod
    from gateway.state import redis as redis_mod
    from gateway.state import rediscommit, resp, signing, sync

    now = time.time_ns
    pending: list[tuple[str, int]] = []  # the stamps of the kill under way
    by_gen: dict[int, list[tuple[str, int]]] = {}
    last_rx = [0]
    last_push = [b""]

    def stamp(name: str) -> None:
        pending.append((name, now()))

    def wrap(owner: object, attr: str, before: str | None, after: str | None) -> None:
        fn = getattr(owner, attr)
        if getattr(fn, "_kg_stage", False):
            return
        if _is_async(fn):
            @functools.wraps(fn)
            async def aw(*a, **k):  # type: ignore[no-untyped-def]
                if before:
                    stamp(before)
                try:
                    return await fn(*a, **k)
                finally:
                    if after:
                        stamp(after)
            aw._kg_stage = True  # type: ignore[attr-defined]
            setattr(owner, attr, aw)
        else:
            @functools.wraps(fn)
            def w(*a, **k):  # type: ignore[no-untyped-def]
                if before:
                    stamp(before)
                try:
                    return fn(*a, **k)
                finally:
                    if after:
                        stamp(after)
            w._kg_stage = True  # type: ignore[attr-defined]
            setattr(owner, attr, w)

    # ---- the committer: the admin call up to the script's answer
    orig_action = api.AdminApi._action

    async def action(self, request, action):  # type: ignore[no-untyped-def]
        pending.clear()
        stamp("admin.handler_entered")
        return await orig_action(self, request, action)
    api.AdminApi._action = action  # type: ignore[method-assign]
    wrap(callers.Callers, "authorize", None, "admin.authorized")
    wrap(inputs, "json_body", None, "admin.body_read")
    wrap(actions_mod, "intent", None, "admin.intent_built")
    wrap(sync.Sync, "write", "write.entered", None)
    wrap(rediscommit.RedisCommits, "commit", "commit.entered", None)
    wrap(signing.Keyring, "seal", None, "commit.sealed")
    orig_send = resp.RespConnection.send

    def send(self, *args, on_reply=None):  # type: ignore[no-untyped-def]
        if args and args[0] in ("EVALSHA", "EVAL") and on_reply is not None:
            stamp("commit.script_send")
            try:
                return orig_send(self, *args, on_reply=on_reply)
            finally:
                stamp("commit.script_sent")
        return orig_send(self, *args, on_reply=on_reply)
    resp.RespConnection.send = send  # type: ignore[method-assign]
    wrap(rediscommit._Own, "replied", "commit.reply_read", None)

    # ---- a subscriber: the push read, verified, decoded, applied
    orig_rx = resp.RespConnection.data_received

    def data_received(self, data):  # type: ignore[no-untyped-def]
        if self._on_message is not None:
            last_rx[0] = now()
        return orig_rx(self, data)
    resp.RespConnection.data_received = data_received  # type: ignore[method-assign]
    orig_msg = redis_mod.RedisStore._on_message

    def on_message(self, channel, data):  # type: ignore[no-untyped-def]
        if channel == self._b_events:
            if not (self._own is not None and data == self._own.sealed):
                pending.clear()
            pending.append(("push.read", last_rx[0]))
            stamp("push.on_message")
            last_push[0] = data
        return orig_msg(self, channel, data)
    redis_mod.RedisStore._on_message = on_message  # type: ignore[method-assign]
    wrap(signing.Keyring, "open", None, "push.verified")
    wrap(redis_mod, "decode_doc", None, "push.decoded")
    wrap(sync.Sync, "_pushed", "push.pushed", None)

    # ---- both: the swap
    wrap(table_mod, "rebuild_table", "swap.rebuild_begin", "swap.rebuilt")
    wrap(table_mod, "_warn_unservable", "swap.listeners_done", "swap.warned")
    orig_apply = sync.Sync._apply

    def apply(self, doc):  # type: ignore[no-untyped-def]
        stamp("apply.entered")
        ok = orig_apply(self, doc)
        stamp("apply.done")
        if ok:
            by_gen[doc.generation] = list(pending)
            pending.clear()
        return ok
    sync.Sync._apply = apply  # type: ignore[method-assign]

    def dump() -> None:
        path = os.path.join(OUT, f"stages-{os.getpid()}.json")  # type: ignore[arg-type]
        with open(path, "w") as f:
            json.dump({str(g): v for g, v in by_gen.items()}, f)
        if last_push[0]:  # the newest document pushed: what a receiver verified and read
            with open(os.path.join(OUT, f"push-{os.getpid()}.bin"), "wb") as f:
                f.write(last_push[0])
    atexit.register(dump)


def _is_async(fn: object) -> bool:
    import inspect
    return inspect.iscoroutinefunction(fn)


if OUT and "serve" in sys.argv:
    # `python -m gateway` puts the working directory first on sys.path only after site
    # runs: without this, the stamps would wrap the installed (editable) tree's gateway,
    # and the instances would run it instead of the one the benchmark started from
    if sys.argv[:1] == ["-m"] and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _install()
