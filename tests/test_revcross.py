"""A second hostile read of the day's merged reviews (revcross). Each failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_cli import acli
from tests.test_killswitch import token

pytestmark = pytest.mark.timeout(90)


async def test_drill_restore_errors_are_json_on_stdout(tmp_path: Path, backends) -> None:
    """`--json` gives `{"error": ...}` on stdout on every failure (README); `killgate drill
    restore` printed nothing there (its message on stderr only), so a runbook step that
    restores a drill and reads the JSON got nothing to parse when the id was wrong or the
    token could not restore."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        for tok, said in ((token("killgate:admin"), "no drill nope"),
                          (token("killgate:read"), "403")):
            env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok}
            res = await acli("--json", "drill", "restore", "nope", env=env)
            assert res.returncode == 1, (res.stdout, res.stderr)
            assert said in res.stderr, res.stderr
            err = json.loads(res.stdout)["error"]
            assert err["exit"] == 1 and said in err["message"], err
