"""`rollback`, `promote`, `weights` and `release` take the route as `--route R` too, as
`kill` and `unkill` do (new-user review: `killgate rollback --route iris` was an error at
3 a.m.). The first word still works; both given differently is an error that changes
nothing; against a real gateway."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(90)


async def test_route_option_on_the_route_commands(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = await acli("token", "--subject", "ops", "--scope", "killgate:admin", "-c", str(cfg))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok.stdout.strip()}

        async def status() -> dict:
            res = await acli("status", "--json", env=env)
            assert res.returncode == 0, res.stderr
            return json.loads(res.stdout)["routes"]["iris"]

        steps = [
            (["weights", "--route", "iris", "v1=50", "v2=50"], "weights of iris: v1=50, v2=50"),
            (["promote", "--route", "iris", "v2"], "promoted v2 on iris"),
            (["rollback", "--route", "iris"], "rolled back iris to v1"),  # (it says where)
            (["promote", "iris", "--route", "iris", "v2"], "promoted v2 on iris"),  # (agree)
            (["rollback", "--route=iris", "--to", "v1"], "rolled back iris to v1"),
            (["weights", "iris", "v1=70", "v2=30"], "weights of iris: v1=70, v2=30"),
            # (words after an option, as before: argparse leaves them over, they are kept)
            (["weights", "iris", "--wait", "2s", "v1=60", "v2=40"], "weights of iris: v1=60"),
            (["promote", "iris", "--wait", "2s", "v1"], "promoted v1 on iris"),
            (["release", "--route", "iris"], "released iris to its config file"),
        ]
        for argv, said in steps:
            res = await acli(*argv, "--reason", "r", env=env)
            assert res.returncode == 0, (argv, res.stderr)
            assert res.stdout.startswith(said), (argv, res.stdout)
        assert (await status())["latched"] is False
        before = await status()
        for argv, said in [
            (["rollback", "iris", "--route", "other"], "two routes given: 'iris' and --route "
             "'other'; give one (killgate rollback ROUTE"),
            (["promote", "iris", "v2", "--route", "other"], "two routes given"),
            (["weights", "iris", "v2=1", "--route", "other"], "two routes given"),
            (["release", "other", "--route", "iris"], "two routes given"),
            (["release"], "give the route: killgate release ROUTE --reason TEXT, or --route"),
            (["promote", "--route", "iris"], "give the version to make stable"),
            (["rollback", "--route", ""], "--route is empty"),
            (["rollback", "iris", "v2"], "unrecognized arguments: v2 (killgate rollback"),
        ]:
            res = await acli(*argv, "--reason", "r", env=env)
            assert res.returncode == 1, (argv, res.stdout, res.stderr)
            assert said in res.stderr, (argv, res.stderr)
            assert "Traceback" not in res.stderr
        assert await status() == before  # (nothing changed)
