"""What a new user meets first, following the README: an `--admin` that names the data
plane by mistake says so, and the drill's missing-picture hint names a pip that works."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)


async def test_an_admin_url_naming_the_data_plane_says_so(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.url, "KILLGATE_TOKEN": "x.y.z"}
        for cmd in (["status"], ["kill", "--route", "iris", "--reason", "r"],
                    ["drill", "history"]):
            res = await acli(*cmd, env=env)
            assert res.returncode == 1, (cmd, res.stderr)
            assert "404 no_route" in res.stderr, (cmd, res.stderr)
            assert "data plane, not its admin API" in res.stderr, (cmd, res.stderr)
            assert "admin.listen" in res.stderr, (cmd, res.stderr)


async def test_a_data_plane_that_routes_the_call_to_a_backend_is_not_taken_for_the_api(
        tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, prefix="/"))
    async with running_gateway(cfg) as g:
        res = await acli("status", env={"KILLGATE_ADMIN_URL": g.url, "KILLGATE_TOKEN": "x.y.z"})
        assert res.returncode == 1, res.stdout
        assert "routed the call to a backend" in res.stderr, res.stderr
        assert "data plane, not its admin API" in res.stderr, res.stderr


def test_the_missing_picture_hint_names_killgates_own_pip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import drill

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    report = {"id": "d-1", "kind": "kill", "route": "r", "verdict": "passed"}
    monkeypatch.setattr(drill, "markdown", lambda r: "# d-1\n")
    paths = drill._write(report, [], tmp_path, "svg")
    assert [x.suffix for x in paths] == [".json", ".md"]
    err = capsys.readouterr().err
    assert f"{shlex.quote(sys.executable)} -m pip install 'killgate[drills]'" in err, err


async def test_check_takes_several_files_and_names_each_ones_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: 1.2.3.4\nroutes: []\n")
    good = [str(p) for p in sorted((Path(__file__).parent.parent / "config").glob("*.yaml"))]
    res = await acli("check", *good)  # `killgate check config/*.yaml`
    assert res.returncode == 0, res.stderr
    assert all(f"{p}: ok" in res.stdout for p in good), res.stdout
    res = await acli("check", good[0], str(bad), str(tmp_path / "missing.yaml"))
    assert res.returncode == 1
    assert f"{good[0]}: ok" in res.stdout
    assert f"{bad}: listen: '1.2.3.4' is not host:port" in res.stderr, res.stderr
    assert f"{tmp_path / 'missing.yaml'}: no such file" in res.stderr, res.stderr
    assert f"{tmp_path / 'missing.yaml'}: {tmp_path / 'missing.yaml'}" not in res.stderr
    # one file: as before, the problems alone
    res = await acli("check", str(bad))
    assert res.returncode == 1 and res.stderr.startswith("listen: "), res.stderr


async def test_a_short_token_secret_is_named(tmp_path: Path) -> None:
    res = await acli("token", "--subject", "a", "--scope", "killgate:read",
                     env={"KILLGATE_JWT_SECRET": "short"})
    assert res.returncode == 1 and not res.stdout
    assert "$KILLGATE_JWT_SECRET is 5 bytes" in res.stderr, res.stderr
    assert "at least 32 bytes" in res.stderr and "short" not in res.stderr.split("bytes")[0]
    key = tmp_path / "admin.key"
    key.write_text("tiny\n")
    key.chmod(0o600)
    cfg = write_config(tmp_path, two_versions(1, 2)).read_text().replace(
        "hs256_secret_env: KILLGATE_TEST_SECRET", f"hs256_secret_file: {key}")
    (tmp_path / "file.yaml").write_text(cfg)
    res = await acli("token", "--subject", "a", "--scope", "killgate:read",
                     "-c", str(tmp_path / "file.yaml"))
    assert res.returncode == 1 and f"the secret in {key} is 4 bytes" in res.stderr, res.stderr


async def test_the_drills_restore_hint_names_the_admin_api_it_drove(
        tmp_path: Path, backends) -> None:
    """`if this process dies, run: killgate drill restore ID` sent an operator who had given
    --admin (not $KILLGATE_ADMIN_URL) to the default admin address: 'no drill ID'."""
    from gateway.admin.tokens import mint
    from tests.conftest import SECRET

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, extra="allow_pin: true\n"))
    # (in-process: the drill, its own process, drives it while this loop serves)
    async with running_gateway(cfg) as g:
        tok = mint(SECRET, "ops", "killgate:admin", 600, "killgate", "killgate-admin")
        res = await acli("drill", "kill", "--route", "iris", "--version", "v2",
                         "--production", "--steady", "500ms", "--hold", "1s", "--settle",
                         "500ms", "--admin", g.admin, "--token", tok, "--instances", g.url,
                         "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"if this process dies, run: killgate --admin {g.admin} drill restore d-" \
        in res.stderr, res.stderr
    assert tok not in res.stdout + res.stderr


async def test_drill_history_on_a_fresh_fleet_says_there_is_none(tmp_path: Path, backends) -> None:
    from gateway.admin.tokens import mint
    from tests.conftest import SECRET

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        tok = mint(SECRET, "ops", "killgate:read", 600, "killgate", "killgate-admin")
        res = await acli("drill", "history", "--admin", g.admin, "--token", tok)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("no drills yet"), res.stdout
        assert "ended" not in res.stdout  # (no table header over nothing)


async def test_an_https_admin_url_to_the_plain_http_listener_says_so(
        tmp_path: Path, backends) -> None:
    """`--admin https://...` to the admin listener (plain HTTP) said `[SSL:
    WRONG_VERSION_NUMBER]`, retried a write and added that it 'may have been applied'
    (nothing had been sent); the drill client said `[Errno 1] Operation not permitted`."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin.replace("http://", "https://"),
               "KILLGATE_TOKEN": "x.y.z"}
        for cmd in (["status"], ["kill", "--route", "iris", "--reason", "r"],
                    ["drill", "history"]):
            res = await acli(*cmd, env=env)
            assert res.returncode == 1, (cmd, res.stderr)
            assert "does not speak TLS" in res.stderr and "http:// URL" in res.stderr, res.stderr
            for bad in ("Operation not permitted", "may have been applied", "once more"):
                assert bad not in res.stderr, (cmd, res.stderr)


async def test_an_error_that_is_not_killgates_says_what_answered(backends) -> None:
    """Something else on the admin URL (an ingress' default backend: a 404 with an empty
    body) printed `killgate: 404 ` and `killgate drill: 404 error: None`."""
    from aiohttp import web

    async def elsewhere(req: web.Request) -> web.StreamResponse:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", elsewhere)
    port = await backends(app)
    env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": "x.y.z"}
    res = await acli("status", env=env)
    assert res.returncode == 1
    assert "404 from http://127.0.0.1" in res.stderr and "an empty body" in res.stderr
    assert "killgate's admin listener?" in res.stderr, res.stderr
    res = await acli("drill", "history", env=env)
    assert res.returncode == 1 and "None" not in res.stderr, res.stderr
    assert "without a killgate error: is that killgate's admin listener?" in res.stderr


async def test_a_gateway_without_its_token_secret_says_where_to_set_it(
        tmp_path: Path, backends, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user who started `killgate serve` without KILLGATE_JWT_SECRET and then sets
    it in the CLI's shell changes nothing: the 503 says the gateway's environment, and that
    the gateway must be restarted to read it."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    monkeypatch.delenv("KILLGATE_TEST_SECRET")
    async with running_gateway(cfg) as g:
        res = await acli("status", env={"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": "x.y.z",
                                        "KILLGATE_TEST_SECRET": "s" * 40})
    assert res.returncode == 1, res.stdout
    err = res.stderr
    assert "503 auth_not_configured: no admin token secret" in err, err
    assert "export KILLGATE_TEST_SECRET=$(openssl rand -hex 32)" in err, err
    assert "where `killgate serve` runs" in err and "restart it" in err, err
    res = await acli("check", str(cfg), env={"KILLGATE_TEST_SECRET": ""})
    assert res.returncode == 0, res.stderr
    assert "e.g. `export KILLGATE_TEST_SECRET=$(openssl rand -hex 32)`" in res.stderr, res.stderr


async def test_a_wrong_option_is_said_with_the_subcommands_usage() -> None:
    """A word the subcommand does not know was said under the top level's usage
    (`killgate [-h] ... COMMAND ...`), which shows nothing of what the subcommand takes.
    (`rollback --route iris` itself is accepted now: tests/test_cli_route_option.py.)"""
    res = await acli("drill", "kill", "--route", "r", "--version", "v", "--bogus")
    assert res.returncode == 2
    assert "usage: killgate drill kill " in res.stderr, res.stderr
    assert "killgate drill kill: error: unrecognized arguments: --bogus" in res.stderr
    res = await acli("diff", "x.yaml", "--bogus")  # (diff's usage errors stay 1)
    assert res.returncode == 1 and "killgate diff: error" in res.stderr, res.stderr


def test_every_option_and_argument_of_every_command_has_help() -> None:
    """`killgate serve --help` showed `-c FILE` bare, `check` a bare `file`, `audit` a bare
    `--limit`, rollback's `--reason` and the drills' `--version`/`--scope` nothing: a new
    user reading --help could not tell what they take."""
    import argparse

    from gateway.cli.main import build_parser

    bare: list[str] = []

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub_name, sub in a.choices.items():
                    walk(sub, f"{name} {sub_name}")
            elif not isinstance(a, argparse._HelpAction) and not a.help:
                bare.append(f"{name}: {a.option_strings or a.dest}")

    walk(build_parser(), "killgate")
    assert not bare, bare


async def test_a_refused_token_says_what_the_gateway_takes(tmp_path: Path, backends) -> None:
    """The commonest slip after the quick start: a token minted in a shell with another
    secret (a fresh `openssl rand`), or without -c for a config with its own issuer, got
    '401 invalid_token: a valid bearer token is required' and nothing else."""
    import time

    import jwt

    from tests.conftest import SECRET

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    other = await acli("token", "--subject", "a", "--scope", "killgate:read",
                       env={"KILLGATE_JWT_SECRET": "o" * 64})
    now = int(time.time())
    old = jwt.encode({"sub": "a", "scope": "killgate:read", "iat": now - 600, "exp": now - 300,
                      "iss": "killgate", "aud": "killgate-admin"}, SECRET, algorithm="HS256")
    async with running_gateway(cfg) as g:
        res = await acli("status", env={"KILLGATE_ADMIN_URL": g.admin,
                                        "KILLGATE_TOKEN": other.stdout.strip()})
        assert res.returncode == 1
        assert "401 invalid_token: a valid bearer token is required (the gateway takes a token" \
            " signed with its own secret" in res.stderr, res.stderr
        assert "`killgate token -c CONFIG`" in res.stderr, res.stderr
        res = await acli("status", env={"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": old})
        assert res.returncode == 1
        assert "401 expired: a valid bearer token is required (the token has expired: use a " \
            "new one, minted by `killgate token -c CONFIG --subject NAME --scope SCOPES` in a " \
            "shell with the gateway's secret; a `killgate demo`'s, by restarting it" \
            in res.stderr, res.stderr


async def test_comma_separated_scopes_say_they_are_separated_by_blanks() -> None:
    res = await acli("token", "--subject", "a", "--scope", "killgate:read,killgate:kill",
                     env={"KILLGATE_JWT_SECRET": "s" * 40})
    assert res.returncode == 1 and not res.stdout
    assert ("unknown scope 'killgate:read,killgate:kill' (scopes are separated by blanks: "
            '--scope "killgate:kill killgate:read")') in res.stderr, res.stderr


async def test_weights_says_the_versions_it_does_not_name_get_nothing(
        tmp_path: Path, backends) -> None:
    """`killgate weights iris v2=20` (meant: the canary at 20 %) gives v1 weight 0, so v2
    takes all of the traffic; the receipt said only 'weights of iris: v2=20'."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = await acli("token", "--subject", "ops", "--scope", "killgate:admin", "-c", str(cfg))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok.stdout.strip()}
        res = await acli("weights", "iris", "v2=20", "--reason", "canary up", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("weights of iris: v2=20; every version not named here: 0 "
                                 "(no weighted traffic)\n"), res.stdout


async def test_the_drill_commands_say_why_a_token_is_refused(tmp_path: Path, backends) -> None:
    """The drill commands have their own client: with no token, or one the gateway refuses,
    they said '401 invalid_token: a valid bearer token is required' and nothing else,
    where the admin CLI says no token was sent, or what the gateway takes."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    other = await acli("token", "--subject", "a", "--scope", "killgate:admin",
                       env={"KILLGATE_JWT_SECRET": "o" * 64})
    async with running_gateway(cfg) as g:
        for token, said in (("", "(no token was sent: give --token or set KILLGATE_TOKEN)"),
                            (other.stdout.strip(), "(the gateway takes a token signed with")):
            for cmd in (["drill", "restore", "d-1"], ["drill", "history"]):
                res = await acli(*cmd, env={"KILLGATE_ADMIN_URL": g.admin,
                                            "KILLGATE_TOKEN": token})
                assert res.returncode != 0, res.stdout
                assert "401 invalid_token: a valid bearer token is required " + said \
                    in res.stderr, (cmd, res.stderr)


async def test_a_secret_given_as_secret_env_is_never_printed() -> None:
    """`killgate token --secret-env "$SECRET"` (the secret, not its variable's name: an easy
    slip) said `no secret: set <the secret> ...`, printing it to the terminal or CI log.
    Now it says what was wrong without showing what was given (revcli6)."""
    secret = "3f9ac0ffee" + "ab" * 27
    res = await acli("token", "--subject", "a", "--scope", "killgate:read",
                     "--secret-env", secret)
    assert res.returncode == 1, res
    assert secret not in res.stderr + res.stdout and secret[:16] not in res.stderr, res.stderr
    assert "not the secret" in res.stderr, res.stderr
    res = await acli("token", "--subject", "a", "--scope", "killgate:read",
                     "--secret-env", "KG_UNSET_FOR_TEST")  # (a name: still named)
    assert res.returncode == 1 and "KG_UNSET_FOR_TEST" in res.stderr, res.stderr


async def test_a_mistyped_route_is_answered_with_the_routes_there(
        tmp_path: Path, backends) -> None:
    """Fifth new-user pass: `killgate kill --route iirs` (or `rollback nope`) said only "404
    unknown_route: no route named 'iirs'"; it now offers the close names, else the routes;
    a version no route has names the route's versions."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = await acli("token", "--subject", "ops", "--scope", "killgate:admin", "-c", str(cfg))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok.stdout.strip()}
        typo = await acli("kill", "--route", "iirs", "--reason", "r", env=env)
        other = await acli("rollback", "nope", "--reason", "r", env=env)
        versions = [await acli(*cmd, "--reason", "r", env=env) for cmd in (
            ["weights", "iris", "v3=10"], ["kill", "--route", "iris", "--version", "v3"],
            ["rollback", "iris", "--to", "v3"])]
        # route names are said only to a reader (tests/test_status_index.py): a token that
        # may kill or roll out but not read is told the name it gave, nothing more
        blind = []
        for scope, cmd in (("killgate:kill", ["kill", "--route", "iirs"]),
                           ("killgate:kill", ["kill", "--route", "iris", "--version", "v3"]),
                           ("killgate:rollout", ["weights", "iris", "v3=10"]),
                           ("killgate:rollout", ["rollback", "iris", "--to", "v3"])):
            t = await acli("token", "--subject", "bot", "--scope", scope, "-c", str(cfg))
            blind.append(await acli(*cmd, "--reason", "r",
                                    env={**env, "KILLGATE_TOKEN": t.stdout.strip()}))
    assert typo.returncode == 1, typo.stdout
    assert typo.stderr.strip() == ("killgate: 404 unknown_route: no route named 'iirs'; did "
                                   "you mean 'iris'? (killgate status lists them all)"), typo.stderr
    assert other.returncode == 1, other.stdout
    assert other.stderr.strip() == ("killgate: 404 unknown_route: no route named 'nope'; the "
                                    "routes here: 'iris' (killgate status lists them all)"), \
        other.stderr
    for res in versions:  # (and a version: "route 'iris' has no version 'v3'", alone)
        assert res.returncode == 1, res.stdout
        assert res.stderr.strip() == ("killgate: 404 unknown_version: route 'iris' has no "
                                      "version 'v3'; its versions: 'v1', 'v2'"), res.stderr
    for res in blind:
        assert res.returncode == 1, res.stdout
        assert res.stderr.strip() in (
            "killgate: 404 unknown_route: no route named 'iirs'",
            "killgate: 404 unknown_version: route 'iris' has no version 'v3'"), res.stderr


async def test_an_unkill_of_the_route_names_the_version_kill_to_lift(
        tmp_path: Path, backends) -> None:
    """Fifth new-user pass: `kill --route iris --version v2`, then `unkill --route iris`,
    said only "there is no route kill for that selector"; it now names the kill in force
    and the command that lifts it (to a reader: a kill-only token is told no names)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = await acli("token", "--subject", "ops", "--scope", "killgate:admin", "-c", str(cfg))
    bot = await acli("token", "--subject", "bot", "--scope", "killgate:kill", "-c", str(cfg))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok.stdout.strip()}
        made = await acli("kill", "--route", "iris", "--version", "v2", "--reason", "r", env=env)
        assert made.returncode == 0, made.stderr
        res = await acli("unkill", "--route", "iris", "--reason", "r", env=env)
        blind = await acli("unkill", "--route", "iris", "--reason", "r",
                           env={**env, "KILLGATE_TOKEN": bot.stdout.strip()})
    assert res.returncode == 1, res.stdout
    assert res.stderr.strip() == (
        "killgate: 409 not_killed: there is no route kill for that selector; narrower kills "
        "are in force under it: version:iris:v2; a kill is lifted by the scope it was made "
        "with (killgate unkill --route iris --version v2)"), res.stderr
    assert blind.returncode == 1, blind.stdout
    assert blind.stderr.strip() == ("killgate: 409 not_killed: there is no route kill for "
                                    "that selector"), blind.stderr
