"""`POST /v1/kill?local=1`: the emergency lever when the state store cannot commit a kill.

Owns the answer to a kill asked with `local=1`: tried through the store as any kill
first (answered as any kill when it commits); only when the store cannot be reached
(`state_store_unavailable`, never `outcome_unknown`: that one may be in force) is it
taken locally: journaled durably, enforced at once on this instance (and within
`state.poll_interval` by every worker of its `--workers` group, which share the
journal), answered 202 `"local": true`. It is merged into the store when it answers
(state/localmerge.py). Kills only: an unkill or a weight is never taken locally. The same
scope as a kill (`killgate:kill`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import inputs
from gateway.admin.ports import Current, LocalKiller
from gateway.domain import kills
from gateway.domain.statedoc import kill_key
from gateway.errors import ApiError, ConflictingState

__all__ = ["HINT", "asked", "held", "not_killed", "take", "unkill_unreachable"]

#: what the 503 of a kill the store cannot commit adds: the lever
HINT = ("; for an emergency kill on this instance only while the store is away, send the "
        "same kill with ?local=1 (`killgate kill --local`): enforced here at once, merged "
        "into the store when it answers")


def asked(request: web.Request, action: str) -> bool:
    """Whether the call asks for a local kill should the store be unreachable (400 for
    any other write: only kills are ever taken locally)."""
    if action != "kill" and "local" in request.query:
        raise inputs.bad("'local' is for a kill only: an unkill, a rollback or a weight "
                         "change is never taken locally")
    raw = inputs.query_text(request, "local", "1|true|0|false",
                            "1 or true (a local kill if the store cannot commit), or 0")
    return raw in ("1", "true")


async def take(local: LocalKiller | None, current: Current, target: dict[str, Any],
               args: dict[str, Any], actor: str, reason: str, why: str,
               instance: str, confirmed: bool = True) -> web.Response:
    """The local kill of `target`, the store having failed with `why`. `confirmed`: the
    state held was confirmed by the store recently; one that was not (an instance cut off
    from the store) may hold a kill lifted since, and never answers 'in force already'
    (found by review revmerge41, as an alert's kill: control/alertlocal.py)."""
    if local is None:
        raise ApiError(503, "state_store_unavailable",
                       f"the state store cannot be reached, nothing was changed ({why}); "
                       "this instance keeps no local kills")
    scope, route, version = target["scope"], target.get("route"), target.get("version")
    key = kill_key(scope, route, version)
    flag = kills.in_force(current.doc, scope, route, version,
                          bool(args.get("abort_inflight", True))) if confirmed else None
    if flag is not None:  # (in force from the store already: nothing to keep locally)
        return web.json_response({"kill": key, "changed": False, "local": False,
                                  "id": flag.ident(), "store": why})
    try:
        entry, new = await local.take(scope, route, version, actor, reason,
                                      bool(args.get("abort_inflight", True)))
    except (OSError, ValueError) as exc:
        raise ApiError(503, "local_kill_not_kept",
                       f"the state store cannot be reached ({why}) and the local kill could "
                       f"not be journaled ({exc}): nothing was changed; fix the volume of "
                       "state.snapshot_path or change the config (weight 0)") from exc
    return web.json_response({
        "kill": key, "changed": new, "local": True, "id": entry["id"],
        "instance": instance, "store": why,
        "enforced": "on this instance at once, by every worker of its --workers group "
                    "within state.poll_interval; NOT by other instances until merged",
        "merge": "committed into the state store as a kill like any other when it "
                 "answers (audited then); `killgate status` shows it until then"},
        status=202)


def held(local: LocalKiller | None, target: dict[str, Any]) -> dict[str, Any] | None:
    """The local kill that stops `target`'s traffic on this instance: its own key's, or a
    wider one (the route's, global); None when there is none. Not in the store yet (an
    unkill through the store does not lift it: it is merged as a kill when the store
    answers), or merged into it already but still in a journal that cannot be rewritten
    (`in_store`: enforced here until its volume is writable and it is dropped)."""
    if local is None:
        return None
    scope, route = target.get("scope"), target.get("route")
    keys = [kill_key(scope, route, target.get("version"))]  # type: ignore[arg-type]
    if scope != "global":
        keys.append("global")
    if scope == "version":
        keys.append(kill_key("route", route, None))
    mine = {e["kill"]: e for e in local.public()["kills"]}
    e = next((mine[k] for k in keys if k in mine), None)
    if e is None:
        return None
    note = {"kill": e["kill"], "id": e["id"], "actor": e["actor"], "time": e["time"]}
    if e.get("in_store") is not None:
        return {**note, "in_store": e["in_store"], "why": (
            f"a local kill merged into the store (generation {e['in_store']}) but still "
            "in this instance's journal, which cannot be rewritten (its volume read-only "
            "or full): enforced here until the journal is writable again and it is dropped "
            "(fix the volume of state.snapshot_path, or remove it from the journal by "
            "hand)")}
    return {**note, "why": (
        "a local kill taken while the state store could not commit, not in it yet: an "
        "unkill does not lift it; it is merged into the store as a kill when the store "
        "answers, then unkill it there (or remove it from the journal by hand)")}


def not_killed(exc: ConflictingState, note: dict[str, Any]) -> ConflictingState:
    """A `not_killed` that says the traffic is still stopped here by a local kill."""
    if note.get("in_store") is not None:
        what = (f"merged into the store (generation {note['in_store']}) but still in this "
                "instance's journal, which cannot be rewritten: enforced here until the "
                "journal is writable again and it is dropped (fix the volume of "
                "state.snapshot_path)")
    else:
        what = ("not in the store yet: it is merged into the store as a kill when the store "
                "answers, then unkill it")
    said = (f"; but on this instance its traffic is stopped by the local kill {note['kill']} "
            f"({note['id']}, {note['actor']}, {note['time']}), {what}")
    out = ConflictingState(exc.type, f"{exc.message}{said}")
    if (bare := getattr(exc, "bare", None)) is not None:
        out.bare = f"{bare}{said}"  # type: ignore[attr-defined]
    return out


def unkill_unreachable(local: LocalKiller | None, target: dict[str, Any],
                       why: str, journal: str | None) -> ApiError | None:
    """The 503 of an unkill the store cannot commit, when a local kill is what stops the
    target here: said, with how it ends (an operator who took it by mistake, at 3 a.m., got
    only "nothing was changed" and no way out). None: no local kill, the plain 503."""
    note = held(local, target)
    if note is None or note.get("in_store") is not None:
        return None
    return ApiError(503, "state_store_unavailable", (
        f"the state store cannot be reached, nothing was changed ({why}); {note['kill']} is "
        f"stopped here by a local kill ({note['id']}, taken by {note['actor']} at "
        f"{note['time']}), which no unkill lifts before it is merged: once the store answers "
        "it is merged as a kill, then unkill it. Taken by mistake and needed off now: remove "
        f"its entry (or the file) from this instance's journal, "
        f"{journal or '<state.snapshot_path>.local-kills'} (README \"Emergency local kill\")"))
