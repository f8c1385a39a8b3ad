"""A write to the admin API as the retry tests make it: a token of `scope` for `who`, an
optional Idempotency-Key, `?wait=` (None: none); → (status, JSON answer, whether the
answer says it was replayed). `unkill_asked`: the approval request the approval-step
retry tests start from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import admin_token


async def keyed_post(session: Any, admin: str, who: str, path: str, body: dict,
                     key: str | None = None, scope: str = "killgate:admin",
                     wait: str | None = "1s") -> tuple[int, dict, bool]:
    h = {"Authorization": f"Bearer {admin_token(scope, who)}"}
    if key is not None:
        h["Idempotency-Key"] = key
    url = f"{admin}{path}" + (f"?wait={wait}" if wait else "")
    async with session.post(url, json=body, headers=h) as r:
        return r.status, await r.json(), r.headers.get("idempotent-replayed") == "true"


Post = Callable[..., Awaitable[tuple[int, dict, bool]]]


async def unkill_asked(session: Any, admin: str, incident: str,
                       post: Post = keyed_post) -> dict[str, Any]:
    """A global kill made, then alice's request to lift it, waiting for approval (202):
    its answer's `approval` (with `unkill_global` needing two or more)."""
    status, body, _ = await post(session, admin, "alice", "/v1/kill",
                                 {"scope": "global", "reason": incident})
    assert status == 200, body
    status, body, _ = await post(session, admin, "alice", "/v1/unkill",
                                 {"scope": "global", "reason": f"{incident} over"})
    assert status == 202, body
    return dict(body["approval"])
