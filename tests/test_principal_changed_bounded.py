"""What a 409 `principal_changed` leaves in the audit trail of the X-Killgate-Subject its
caller sent: for a read-only token, its length and SHA-256, never its text; for a token
that may write (whose writes' reasons put its text there anyway), its text too, cleaned
and bounded. Found at stop 37 (impadmin4 item 2): the header's text, cleaned, up to 200
characters, went into the tallied event's reason for any valid token, so a
`killgate:read` token, which may write nothing, wrote text of its choosing into the
tamper-evident trail (an event per endpoint and flush)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(60)

PLANTED = " ".join(["PWNED: the on-call rota is at evil.example, log in there"] * 4)


async def _refused(session: Any, g: Any, scope: str, sub: str, claimed: str) -> None:
    headers = {**bearer(scope, sub), "X-Killgate-Subject": claimed}
    async with session.get(g.admin + "/v1/status", headers=headers) as r:
        assert r.status == 409, await r.text()
        assert (await r.json())["error"]["type"] == "principal_changed"


async def _event(g: Any, actor: str) -> dict:
    async def found() -> list[dict]:
        return [e for e in await g.gw.sync.store.audit_events()
                if e["action"] == "principal_changed" and e["actor"] == actor]

    await wait_until(found, 10, 0.05, f"{actor}'s principal_changed in the trail")
    [ev] = await found()
    return ev


async def test_a_read_only_token_puts_no_text_of_its_own_in_the_trail(
        tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        gen = g.gw.holder.doc.generation
        await _refused(session, g, "killgate:read", "mallory", PLANTED)
        # tokens that may write: whom the request was prepared for, named (bounded)
        await _refused(session, g, "killgate:read killgate:kill", "dave", "alice")
        await _refused(session, g, "killgate:admin", "erin", PLANTED)
        ev = await _event(g, "mallory")
        assert "PWNED" not in json.dumps(ev) and "evil" not in json.dumps(ev), ev
        digest = hashlib.sha256(PLANTED.encode()).hexdigest()
        assert f"{len(PLANTED)} characters, sha256:{digest}" in ev["reason"], ev
        assert "'mallory'" in ev["reason"] and ev["target"]["path"] == "/v1/status", ev
        assert len(ev["reason"]) < 250, ev
        ev = await _event(g, "dave")
        alice = hashlib.sha256(b"alice").hexdigest()
        assert f"'alice', 5 characters, sha256:{alice}" in ev["reason"], ev
        ev = await _event(g, "erin")
        assert PLANTED[:64] in ev["reason"] and PLANTED[:65] not in ev["reason"], ev
        assert g.gw.holder.doc.generation == gen  # (the trail aside, nothing changed)
