"""`killgate weights iris v1=50 v1=50` (a typo for `v1=50 v2=50`) took the last value
given for v1 and gave v2, not named, weight 0: all of the traffic to v1, answered as a
success. A version named twice is refused before anything is sent, and nothing changes.

Found by the new-user review (revnewuser2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)


async def _effective(session: ClientSession, admin: str, token: str) -> dict[str, float]:
    async with session.get(admin + "/v1/status",
                           headers={"Authorization": f"Bearer {token}"}) as r:
        versions = (await r.json())["routes"]["iris"]["versions"]
    return {name: v["effective_weight"] for name, v in versions.items()}


@pytest.mark.parametrize("pairs", [("v1=50", "v1=50"), ("v1=50", "v2=10", "v1=60")])
async def test_a_version_named_twice_is_refused_and_nothing_changes(
        tmp_path: Path, backends, session: ClientSession, pairs: tuple[str, ...]) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = (await acli("token", "--subject", "ops", "--scope", "killgate:admin",
                      "-c", str(cfg))).stdout.strip()
    async with running_gateway(cfg) as g:
        before = await _effective(session, g.admin, tok)
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok}
        res = await acli("weights", "iris", *pairs, "--reason", "even split", env=env)
        assert res.returncode == 1 and not res.stdout, res
        assert "version 'v1' is given more than once" in res.stderr, res.stderr
        assert await _effective(session, g.admin, tok) == before == {"v1": 90, "v2": 10}
