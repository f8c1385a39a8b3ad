"""The 503 `auth_not_configured` a caller gets without any valid token says which setting
is wrong, never the key file's path: the admin port's callers are not the gateway host's
operators (the path is in the log's `admin_auth_not_configured` and in `killgate check`).

Against an in-process gateway with real key files (one missing, one world-readable).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.admin.tokens import mint
from gateway.log import _FIELDS
from tests.backends import echo_app
from tests.conftest import SECRET, running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(30)

ISS, AUD = "killgate", "killgate-admin"
HIDDEN = "kg-host-layout-7f3a"  # a folder name that must not reach the caller


def _problems(caplog: pytest.LogCaptureFixture) -> str:
    """What the log's admin_auth_not_configured lines say (their fields)."""
    return " ".join(str(getattr(r, _FIELDS, "")) for r in caplog.records
                    if r.getMessage() == "admin_auth_not_configured")


async def _refused(session: ClientSession, admin: str, kid: str | None) -> dict[str, str]:
    tok = mint(SECRET, "alice", "killgate:read", 60, ISS, AUD, kid)
    async with session.get(admin + "/v1/status",
                           headers={"Authorization": f"Bearer {tok}"}) as r:
        assert r.status == 503
        text = await r.text()
        err: dict[str, str] = (await r.json())["error"]
    assert err["type"] == "auth_not_configured"
    assert HIDDEN not in text and ".secret" not in text, text
    assert "killgate check" in err["message"], err
    return err


@pytest.mark.parametrize("which", ["main", "scoped"])
async def test_a_key_file_problem_is_said_without_its_path(
        tmp_path: Path, backends, session, caplog: pytest.LogCaptureFixture,
        which: str) -> None:
    p = await backends(echo_app("v1"))
    keys = tmp_path / HIDDEN
    keys.mkdir()
    loose = keys / "drills.secret"  # readable by all: refused as a secret
    loose.write_text("drills-secret-0123456789-abcdefghijklmnop\n")
    loose.chmod(0o644)
    absent = keys / "absent.secret"
    cfg = write_config(tmp_path, two_versions(p, p))
    main = (f"    hs256_secret_file: {absent}\n" if which == "main"
            else "    hs256_secret_env: KILLGATE_TEST_SECRET\n")
    cfg.write_text(cfg.read_text().replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        f"{main}    scoped_keys:\n      - name: drills\n        hs256_secret_file: {loose}\n"
        "        max_scopes: [killgate:read]\n"))
    with caplog.at_level(logging.ERROR, "killgate.admin"):
        async with running_gateway(cfg) as g:
            if which == "main":
                err = await _refused(session, g.admin, None)
                assert "admin.auth.hs256_secret_file" in err["message"], err
            else:
                err = await _refused(session, g.admin, "drills")
                assert "scoped_keys[0] (drills)" in err["message"], err
    # the gateway host's operator still gets the path, in the log
    assert str(absent if which == "main" else loose) in _problems(caplog), caplog.records
