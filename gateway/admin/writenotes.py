"""What a write's answer says beside its change: a kill that still stops the traffic an
unkill lifted, the version a rollback went to, a release's warnings.

Owns `notes` (the answer's extra fields once a write is in, whether applied at once or by
an approval) and `wider_kill`/`still_covered` (a global or route kill still in force over
an unkill's target). Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from gateway.config import Config
from gateway.domain import overrides
from gateway.domain.audit import clean_text
from gateway.domain.statedoc import StateDoc, kill_key
from gateway.errors import ApiError

if TYPE_CHECKING:
    from gateway.admin.actions import Intent

__all__ = ["notes", "still_covered", "unknown_route", "wider_kill"]


def wider_kill(doc: StateDoc, target: dict[str, Any]) -> str | None:
    """The key of a kill in `doc` wider than an unkill's `target` (global, or the version's
    route) that still stops the same traffic; None when there is none."""
    wider = ["global"] if target.get("scope") != "global" else []
    if target.get("scope") == "version":
        wider.append(kill_key("route", target.get("route"), None))
    return next((k for k in wider if k in doc.kills), None)


def still_covered(cur: StateDoc, t: dict[str, Any], narrower: bool = True) -> str:
    """What a `not_killed` adds when a wider kill still stops that traffic: without it, an
    unkill of a route under a global kill read as if the route were served again."""
    key = wider_kill(cur, t)
    if key is None:
        return _narrower(cur, t) if narrower else ""
    flag = cur.kills[key]
    return (f"; its traffic is still stopped by the {key} kill in force ({flag.actor}, "
            f"{flag.time}): lift that one to serve it again")


def _narrower(cur: StateDoc, t: dict[str, Any]) -> str:
    """What a `not_killed` adds when narrower kills are in force under the selector: `kill
    --route chat --version v2` then `unkill --route chat` said only "there is no route kill
    for that selector" (a new user's pass), and not what to lift instead."""
    if t.get("scope") == "version":
        return ""
    under = sorted(k for k, f in cur.kills.items() if k != "global" and (
        t.get("scope") == "global" or (f.scope == "version" and f.route == t.get("route"))))
    if not under:
        return ""
    first = cur.kills[under[0]]
    how = f"--route {first.route}" + (f" --version {first.version}" if first.version else "")
    more = f" and {len(under) - 5} more" if len(under) > 5 else ""
    return (f"; narrower kills are in force under it: {', '.join(under[:5])}{more}; a kill is "
            f"lifted by the scope it was made with (killgate unkill {how})")


def notes(i: Intent, new: StateDoc, cfg: Config) -> dict[str, Any]:
    """What the answer says once the write is in, beside `Plan.answer`."""
    route = i.target.get("route") or ""
    rc = cfg.route(route) if route else None
    if i.action == "unkill" and (wider := wider_kill(new, i.target)):
        return {"still_killed_by": wider}  # (lifted, yet that traffic stays stopped)
    if i.action == "rollback" and (ov := new.overrides.get(route)) is not None:
        return {"to": ov.stable}  # (without `to`: the version it went to, said)
    if i.action == "release" and rc is not None and (w := overrides.release_warnings(new, rc)):
        return {"warnings": w}  # (a version rolled off as bad serves again)
    return {}


def unknown_route(cfg: Config, name: object) -> ApiError:
    """404 `unknown_route` naming the routes there are (a typo said only "no route named
    'chta'"; a new user's pass): the close ones, else the first few, and where all are.
    Its `bare` message names none, for a caller without killgate:read (route names are
    said only to readers: tests/test_status_index.py)."""
    said = clean_text(str(name), 64)
    names = [r.name for r in cfg.routes]
    close = difflib.get_close_matches(said, names, n=3)
    shown = close or names[:8]
    hint = ("; did you mean " if close else "; the routes here: ") + ", ".join(
        repr(n) for n in shown) + ("?" if close else "" if len(names) <= 8 else ", ...")
    exc = ApiError(404, "unknown_route", f"no route named {said!r}"
                   + (hint + " (killgate status lists them all)" if names else ""))
    exc.bare = f"no route named {said!r}"  # type: ignore[attr-defined]
    return exc
