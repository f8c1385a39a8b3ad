"""Hostile review of the admin API's trust boundary (stop 42's caches and beyond), as an
attacker who can reach the admin port. Each test is a defect found and fixed, proven on an
in-process gateway over real HTTP."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import jwt
import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(60)

ISS, AUD = "killgate", "killgate-admin"
OLD = "scoped-old-secret-0123456789-abcdefghijklmnop"
NEW = "scoped-new-secret-0123456789-abcdefghijklmnop"


def _write_secret(path: Path, secret: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(secret + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _token(secret: str, kid: str, scope: str = "killgate:read", sub: str = "job") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "scope": scope, "iat": now, "exp": now + 300,
                       "iss": ISS, "aud": AUD}, secret, algorithm="HS256",
                      headers={"kid": kid})


async def _status(s: ClientSession, admin: str, token: str) -> int:
    async with s.get(admin + "/v1/status", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


async def test_a_scoped_key_rotated_in_its_file_stops_verifying_at_reload(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The main key from the environment, a scoped key from a file: the scoped key leaks,
    the operator writes a new secret into its file (the config unchanged) and reloads. The
    reload read the key files again only when the *main* key came from a file, so the leaked
    scoped secret went on minting valid tokens until a restart (and its tokens verified
    before stayed in the principal cache)."""
    p = await backends(echo_app("v1"))
    key = tmp_path / "bot.secret"
    _write_secret(key, OLD)
    cfg = write_config(tmp_path, two_versions(p, p), extra="server: {watch_config: false}\n")
    scoped = textwrap.dedent("""\
        scoped_keys:
          - name: bot
            hs256_secret_file: bot.secret
            max_scopes: [killgate:read]
        """)
    cfg.write_text(cfg.read_text().replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n" + textwrap.indent(scoped, "    ")))
    async with running_gateway(cfg) as g:
        watcher = g.gw.watcher
        assert watcher is not None
        cached = _token(OLD, "bot")
        assert await _status(session, g.admin, cached) == 200  # (now in the verified cache)
        _write_secret(key, NEW)
        await watcher.reload("sighup")  # (False: the config file itself is unchanged)
        assert await _status(session, g.admin, _token(NEW, "bot")) == 200
        assert await _status(session, g.admin, _token(OLD, "bot", sub="fresh")) == 401
        assert await _status(session, g.admin, cached) == 401
