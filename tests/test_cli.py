"""The operator CLI against a live gateway: every command, --json, and errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import jwt

from tests import cli_fork, cli_fork_spawn
from tests.backends import echo_app
from tests.conftest import ROOT, SECRET, running_gateway, two_versions, wait_until, write_config


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`killgate *args` in a process of its own, forked from one that imported the CLI
    already (tests/cli_fork.py: the same main() as `python -m gateway`, without its
    ~0.6 s of imports per command); test_the_cli_runs_as_python_m_gateway checks the two
    agree."""
    e = dict(os.environ)
    e.update(env or {})
    return cli_fork.run(list(args), e, str(ROOT), 60)


def cli_process(*args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    """`python -m gateway *args`, a fresh interpreter."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=60, cwd=str(ROOT), env=e)


async def acli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, env=env)


async def test_every_command_against_a_live_gateway(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = await acli("token", "--subject", "ops", "--scope", "killgate:admin", "-c", str(cfg))
    assert tok.returncode == 0, tok.stderr
    token = tok.stdout.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="killgate-admin")
    assert claims["sub"] == "ops" and claims["iss"] == "killgate"
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token}
        steps = [
            ["kill", "--route", "iris", "--version", "v2", "--reason", "bad v2"],
            ["unkill", "--route", "iris", "--version", "v2", "--reason", "fixed"],
            ["kill", "--global", "--reason", "everything", "--keep-inflight"],
            ["unkill", "--global", "--reason", "back"],
            ["weights", "iris", "v1=50", "v2=50", "--reason", "shift"],
            ["promote", "iris", "v2", "--reason", "ship"],
            ["rollback", "iris", "--reason", "back to v1"],
            ["rollback", "iris", "--to", "v2", "--reason", "forward again"],
            ["release", "iris", "--reason", "file governs"],
        ]
        for step in steps:
            human = await acli(*step, env=env)
            assert human.returncode == 0, (step, human.stderr)
            assert "generation" in human.stdout and "applied by 1/1" in human.stdout
        # --json, before or after the subcommand, parses
        res = await acli("--json", "kill", "--route", "iris", "--reason", "json", env=env)
        data = json.loads(res.stdout)
        assert data["kill"] == "route:iris" and data["applied"]["acked"] == 1
        res = await acli("unkill", "--route", "iris", "--reason", "json", "--json", env=env)
        assert json.loads(res.stdout)["unkill"] == "route:iris"
        st = await acli("status", "--json", env=env)
        assert json.loads(st.stdout)["routes"]["iris"]["stable"] == "v1"
        human = await acli("status", env=env)
        assert "ROUTES" in human.stdout and "iris" in human.stdout
        assert "INSTANCES" in human.stdout and "test" in human.stdout  # the fleet view
        audit = await acli("audit", "--limit", "5", "--json", env=env)
        assert len(json.loads(audit.stdout)["events"]) == 5
        human = await acli("audit", env=env)
        assert "release" in human.stdout and "rollback" in human.stdout
        verify = await acli("audit", "verify", env=env)
        assert verify.returncode == 0 and "audit chain ok" in verify.stdout
        verify = await acli("audit", "verify", "--json", env=env)
        assert json.loads(verify.stdout)["ok"] is True
        # --admin/--token flags win over the environment
        flags = await acli("status", "--admin", g.admin, "--token", token, "--json")
        assert flags.returncode == 0


async def test_errors_exit_non_zero_with_the_api_message(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        tok = (await acli("token", "--subject", "ro", "--scope", "killgate:read", "-c",
                          str(cfg))).stdout.strip()
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok}
        res = await acli("kill", "--route", "iris", "--reason", "x", env=env)
        assert res.returncode == 1
        assert "403 forbidden: the token lacks the scope 'killgate:kill'" in res.stderr
        admin = (await acli("token", "--subject", "a", "--scope", "killgate:admin", "-c",
                            str(cfg))).stdout.strip()
        env["KILLGATE_TOKEN"] = admin
        res = await acli("kill", "--route", "nope", "--reason", "x", env=env)
        assert res.returncode == 1 and "404 unknown_route" in res.stderr
        res = await acli("release", "iris", "--reason", "x", env=env)
        assert res.returncode == 1 and "409 not_latched" in res.stderr
        res = await acli("weights", "iris", "v1:50", "--reason", "x", env=env)
        assert res.returncode == 1 and "is not VERSION=WEIGHT" in res.stderr
        res = await acli("kill", "--reason", "x", env=env)
        assert res.returncode == 1 and "give --global, or --route" in res.stderr
        res = await acli("status", env={**env, "KILLGATE_TOKEN": "garbage"})
        assert res.returncode == 1 and "401 invalid_token" in res.stderr

        async def denied_rows() -> list[str] | None:  # written within about a second
            out = (await acli("audit", env=env)).stdout.splitlines()
            rows = [ln for ln in out if "_fail x" in ln]
            return rows if len(rows) == 2 else None

        rows = await wait_until(denied_rows, 15, 0.2, "the denied calls in `killgate audit`")
        assert any("ro (127.0.0.1)" in r and "authz_fail x1" in r and "POST /v1/kill" in r
                   for r in rows), rows
        assert any("anonymous (127.0.0.1)" in r and "authn_fail x1" in r
                   and "GET /v1/status" in r for r in rows), rows
    res = await acli("status", env={"KILLGATE_ADMIN_URL": "http://127.0.0.1:1"})
    assert res.returncode == 1 and "cannot reach the admin API" in res.stderr


def test_token_needs_a_long_enough_secret() -> None:
    res = cli("token", "--subject", "a", "--scope", "killgate:read", "--secret-env", "SHORTY",
              env={"SHORTY": "short"})
    assert res.returncode == 1 and "at least 32 bytes" in res.stderr
    res = cli("token", "--subject", "a", "--scope", "killgate:read", "--secret-env", "NOPE_X")
    assert res.returncode == 1 and "no secret: set NOPE_X" in res.stderr


def test_token_with_a_config_that_is_missing_or_invalid_says_so(tmp_path: Path) -> None:
    """README (Alerts that act) runs `killgate token -c killgate.yaml ...`: a new user whose
    folder has no such file got a Python traceback instead of one line naming the file."""
    res = cli("token", "-c", str(tmp_path / "killgate.yaml"), "--subject", "am",
              "--scope", "killgate:alert")
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr, res.stderr
    assert "killgate.yaml: no such file" in res.stderr, res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: 3\n")
    res = cli("token", "-c", str(bad), "--subject", "am", "--scope", "killgate:alert")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "invalid config" in res.stderr and "routes" in res.stderr, res.stderr


def test_token_with_a_config_names_the_variable_it_reads(tmp_path: Path) -> None:
    """With -c given and its secret variable unset, the hint is not `give -c FILE`."""
    cfg = tmp_path / "k.yaml"
    cfg.write_text("admin: {auth: {hs256_secret_env: NU_UNSET_SECRET}}\nroutes:\n"
                   "  - {name: r, match: {path_prefix: /}, stable: v1,\n"
                   "     versions: [{name: v1, url: 'http://127.0.0.1:9', weight: 1}]}\n")
    res = cli("token", "-c", str(cfg), "--subject", "am", "--scope", "killgate:alert")
    assert res.returncode == 1, res
    assert "no secret: set NU_UNSET_SECRET" in res.stderr, res.stderr
    assert "give -c FILE" not in res.stderr, res.stderr


def test_token_refuses_a_scope_the_gateway_does_not_know() -> None:
    """`--scope killgate:reed` (a typo) minted a token that every call then refused."""
    env = {"NU_SECRET": "s" * 40}
    res = cli("token", "--subject", "a", "--scope", "killgate:read killgate:reed",
              "--secret-env", "NU_SECRET", env=env)
    assert res.returncode == 1 and res.stdout == "", res
    assert "unknown scope 'killgate:reed'" in res.stderr and "killgate:read," in res.stderr
    res = cli("token", "--subject", "a", "--scope", "killgate:read killgate:kill",
              "--secret-env", "NU_SECRET", env=env)
    assert res.returncode == 0 and res.stdout.count(".") == 2, res


def test_the_cli_runs_as_python_m_gateway(tmp_path: Path) -> None:
    """cli() forks the command from a process that imported the CLI (tests/cli_fork.py),
    as does cli_fork_spawn.spawn() (a drill read as it runs): what they give is what `python -m
    gateway` gives: exit codes (0, 1, argparse's 2), stdout, stderr, the environment."""
    cfg = tmp_path / "k.yaml"
    cfg.write_text("routes: 3\n")
    env = {"KILLGATE_TOKEN": "x"}
    for args in (("--version",), ("kill", "--bogus"), ("check", str(cfg))):
        forked, fresh = cli(*args, env=env), cli_process(*args, env=env)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode, fresh.stdout, fresh.stderr), args
        streamed = cli_fork_spawn.spawn(list(args), {**os.environ, **env}, str(ROOT))  # (a drill's)
        out, err = streamed.communicate(timeout=60)
        assert (streamed.returncode, out, err) == (
            fresh.returncode, fresh.stdout, fresh.stderr), args
    assert cli("kill", "--bogus").returncode == 2
