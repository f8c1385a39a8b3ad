"""The drill tests' rig: two routes on real backends, the drill API called as dana.

`routes(p1, p2)`: `iris` and its drill route `iris-drill`, versions v1 and v2 at 50/50 on
two backends; `hdr`/`call`: the admin API as dana with the drill and read scopes (the
status and JSON of each answer); `open_drill`: a kill drill of v2 on iris-drill, opened;
`answer`: a data-plane request's status, version and decision.
"""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession

from tests.conftest import bearer

__all__ = ["DRILL", "answer", "call", "hdr", "open_drill", "routes"]

DRILL = "killgate:drill killgate:read"


def hdr(scope: str = DRILL, sub: str = "dana") -> dict[str, str]:
    return bearer(scope, sub, 600)


def routes(p1: int, p2: int, pin: bool = True) -> str:
    versions = (f'  versions:\n'
                f'    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 50}}\n'
                f'    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 50}}\n')
    return (f"- name: iris\n  match: {{path_prefix: /v2/models/iris}}\n  stable: v1\n"
            f"  allow_pin: {str(pin).lower()}\n" + versions
            + "- name: iris-drill\n  match: {path_prefix: /drill/iris}\n  drill_for: iris\n"
            "  stable: v1\n  allow_pin: true\n" + versions)


async def call(s: ClientSession, method: str, url: str, body: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with s.request(method, url, json=body, headers=headers or hdr()) as r:
        return r.status, await r.json()


async def answer(s: ClientSession, url: str, **headers: str) -> tuple[int, str, str]:
    async with s.get(url, headers=headers) as r:
        await r.read()
        return (r.status, r.headers.get("x-killgate-version", ""),
                r.headers.get("x-killgate-decision", ""))


async def open_drill(s: ClientSession, admin: str, **body: Any) -> str:
    """Open a drill (a kill of v2 on iris-drill unless `body` says otherwise): its id."""
    st, out = await call(s, "POST", f"{admin}/v1/drills", {
        "kind": "kill", "route": "iris-drill", "version": "v2", "reason": "r", **body})
    assert st == 200, out
    return str(out["drill"])
