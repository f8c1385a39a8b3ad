"""The functions of a kill's path that benchmarks/killstages/sitecustomize.py wraps, by name.

One list, read by the stamps, by kill_stages.py before it starts anything, and by
tests/test_kill_stages_targets.py: a function renamed or moved fails those loudly (it made
kill_stages.py print `n=0` for weeks, its stamps hooked to names no kill reached any more).
"""

from __future__ import annotations

import importlib

#: (module, attribute path) of every function the stamps wrap
TARGETS: tuple[tuple[str, str], ...] = (
    ("aiohttp.web_protocol", "RequestHandler.data_received"),  # admin.read
    ("aiohttp.web_protocol", "RequestHandler._handle_request"),  # admin.request_task
    ("gateway.admin.actionsapi", "ActionsApi._action"),  # handler.entered
    ("gateway.admin.callers", "Callers.authorize"),  # handler.authorized
    ("gateway.admin.inputs", "json_body"),  # handler.body_read
    ("gateway.state.sync", "Sync.write"),  # write.entered
    ("gateway.state.redis", "RedisStore.commit"),  # commit.entered
    ("gateway.state.rediscommit", "seal_commit"),  # commit.sealed
    ("gateway.state.resp", "RespConnection.send"),  # commit.evalsha_written
    ("gateway.state.resp", "RespConnection.data_received"),  # *.rx
    ("gateway.state.rediscommit", "_Own.replied"),  # commit.reply_parsed
    ("gateway.state.redislink", "RedisLink._script"),  # after.script_returned
    ("gateway.state.signing", "Keyring.open"),  # push.verify_begin, push.verified
    ("gateway.state.shareddecode", "SharedDecoder.decode"),  # push.decoded
    ("gateway.state.appliedlog", "AppliedLog.later"),  # applied (state_applied's stamp)
    ("gateway.state.fleet", "Fleet.receipt"),  # after.receipt_wait
)


class MissingTarget(RuntimeError):
    """A hooked function no longer exists where the stamps look for it."""


def resolve(module: str, path: str) -> tuple[object, str, object]:
    """(the owner, the attribute's name, the function) of one target, or MissingTarget
    naming it."""
    try:
        owner: object = importlib.import_module(module)
    except ImportError as exc:
        raise MissingTarget(f"{module} cannot be imported ({exc})") from None
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part, None)
        if owner is None:
            raise MissingTarget(f"{module}.{path}: {module} has no {part!r}")
    fn = getattr(owner, name, None)
    if not callable(fn):
        raise MissingTarget(f"{module}.{path} no longer exists (renamed or moved): "
                            "update benchmarks/killstages/")
    return owner, name, fn


def missing() -> list[str]:
    """Every target that cannot be resolved, said as MissingTarget says it."""
    out = []
    for module, path in TARGETS:
        try:
            resolve(module, path)
        except MissingTarget as exc:
            out.append(str(exc))
    return out
