"""A write to the admin API as the retry tests make it: a token of `scope` for `who`, an
optional Idempotency-Key, `?wait=` (None: none); → (status, JSON answer, whether the
answer says it was replayed)."""

from __future__ import annotations

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
