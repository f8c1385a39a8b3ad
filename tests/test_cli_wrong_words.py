"""The wrong words a new user types first are answered with the command that works (review
as a new user: `killgate kill iris --reason ...`, as `rollback iris` takes its route, said
only "unrecognized arguments: iris"; `killgate serve killgate.yaml`, as `check` takes its
file, said only that -c is required; `killgate check -c FILE`, as `serve` takes it). Each is
a usage error (exit 2) before anything is sent: the admin URL here is a black hole, which a
call that was sent would wait on."""

from __future__ import annotations

import socket

import pytest

from tests.backends import black_hole
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("argv", "said"), [
    (["kill", "iris"], "unrecognized arguments: iris (the route and version are options of "
     "kill: killgate kill --route iris --reason TEXT)"),
    (["kill", "iris", "v2"], "killgate kill --route iris --version v2 --reason TEXT)"),
    (["unkill", "--route", "iris", "v2"],
     "unrecognized arguments: v2 (the route and version are options of unkill: killgate "
     "unkill --route iris --version v2 --reason TEXT)"),
    (["kill", "it's"], "killgate kill --route 'it'\"'\"'s' --reason TEXT)"),  # (quoted)
])
async def test_a_route_given_as_a_word_to_kill_says_the_option(argv: list[str],
                                                                said: str) -> None:
    with black_hole() as port:
        env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": "x",
               "KILLGATE_TIMEOUT": "5"}
        res = await acli(*argv, "--reason", "r", env=env)
    assert res.returncode == 2, res.stderr
    assert f"killgate {argv[0]}: error: " in res.stderr and said in res.stderr, res.stderr


async def test_words_that_name_no_route_get_no_hint() -> None:
    for argv in (["kill", "--global", "iris"], ["kill", "iris", "v2", "v3"],
                 ["kill", "--route", "iris", "--version", "v2", "v3"]):
        res = await acli(*argv, "--reason", "r")
        assert res.returncode == 2, res.stderr
        assert "unrecognized arguments: " in res.stderr, res.stderr
        assert "(the route" not in res.stderr, res.stderr


async def test_serve_with_the_file_as_a_word_says_to_give_it_with_c() -> None:
    res = await acli("serve", "my config.yaml")
    assert res.returncode == 2, res.stderr
    assert ("killgate serve: error: the following arguments are required: -c/--config (the "
            "config file is given with -c: killgate serve -c 'my config.yaml')") in res.stderr
    res = await acli("serve")  # (no word: argparse's own words, as before)
    assert res.returncode == 2
    assert res.stderr.rstrip().endswith("required: -c/--config"), res.stderr


async def test_check_with_c_says_it_takes_the_files_alone() -> None:
    res = await acli("check", "-c", "k.yaml")
    assert res.returncode == 2, res.stderr
    assert ("killgate check: error: unrecognized arguments: -c (check takes the files alone: "
            "killgate check k.yaml)") in res.stderr, res.stderr


async def test_a_token_typed_where_the_route_goes_is_never_printed() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
    res = await acli("kill", token, "--reason", "r")
    assert res.returncode == 2 and token not in res.stderr + res.stdout, res.stderr
    assert "(a token, not shown)" in res.stderr, res.stderr


async def test_an_admin_api_nobody_listens_on_says_what_to_check() -> None:
    """`Connection refused` alone, at 3 a.m.: the gateway is down, or the URL names another
    port than its `admin.listen`; the message says both, and where the URL is set."""
    with socket.socket() as s:  # (a port just freed: nothing listens on it)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": "x"}
    for argv in (["status"], ["kill", "--route", "iris", "--reason", "r"]):
        res = await acli(*argv, env=env)
        assert res.returncode == 1, res.stderr
        assert (f"cannot reach the admin API at http://127.0.0.1:{port}: [Errno 111] "
                "Connection refused (nothing listens there: is `killgate serve` running, with "
                "that `admin.listen`? --admin or $KILLGATE_ADMIN_URL names another)"
                in res.stderr), res.stderr


async def test_serve_usage_still_says_c_is_required() -> None:
    res = await acli("serve", "--help")
    assert res.returncode == 0
    assert res.stdout.startswith("usage: killgate serve [-h] -c FILE [--workers N]\n"), res.stdout


async def test_killgate_alone_lists_the_commands() -> None:
    res = await acli()
    assert res.returncode == 2 and res.stdout == "", res.stdout
    assert res.stderr.startswith("usage: killgate "), res.stderr
    for command in ("serve", "check", "demo", "status", "kill", "unkill", "token", "drill"):
        assert f"\n    {command} " in res.stderr, (command, res.stderr)
    assert "required: COMMAND" not in res.stderr


@pytest.mark.parametrize("args", [
    ["status", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    ["status", "--tokn", "c2VjcmV0LWtleS1mb3ItdGhlLWdhdGV3YXktMTIzNDU2Nzg5MA=="],
    ["status", "--tokn=Xk3_p9QwErTyUi0pAsDfGhJkLz"],
    ["Xk3_p9QwErTyUi0pAsDfGhJkLz"],
    ["kill", "Xk3_p9QwErTyUi0pAsDfGhJkLz", "--reason", "r"],
])
async def test_a_key_typed_in_the_wrong_place_is_never_printed(args: list[str]) -> None:
    """A hex or base64 key (an HMAC secret, an API key) typed where no word goes was
    echoed by argparse's "unrecognized arguments: <key>" (a JWT already was not)."""
    key = args[-1].split("=", 1)[-1] if args[-1].startswith("--") else next(
        a for a in args if len(a) >= 24)
    res = await acli(*args)
    assert res.returncode == 2, res.stderr
    assert key.rstrip("=") not in res.stderr + res.stdout, res.stderr
    assert "(a key, not shown)" in res.stderr, res.stderr


async def test_a_long_route_or_file_name_is_still_quoted() -> None:
    res = await acli("status", "/etc/killgate/production-killgate-config.yaml",
                     "iris-classifier-production-v2")
    assert res.returncode == 2, res.stderr
    assert ("unrecognized arguments: /etc/killgate/production-killgate-config.yaml "
            "iris-classifier-production-v2") in res.stderr, res.stderr
