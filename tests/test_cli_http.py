"""The admin client never follows a redirect and never prints a success it cannot show
(cli/http.py): against real loopback servers that redirect or answer nonsense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from gateway.cli.http import ClientError
from gateway.cli.shapes import expect
from tests.backends import any_path_app, fake_admin
from tests.test_cli import acli


def _lying_api(answer: dict | str, status: int = 200) -> web.Application:
    async def handler(req: web.Request) -> web.StreamResponse:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return web.Response(text=text, status=status, content_type="application/json")

    return any_path_app(handler)


RECEIPT = {"generation": 3, "applied": {"instances": 1, "acked": 1, "elapsed_ms": 1.0,
                                        "pending": []}}


async def test_a_redirect_is_not_followed_and_the_token_stays_home(backends) -> None:
    seen: list[str | None] = []

    async def thief(req: web.Request) -> web.StreamResponse:
        seen.append(req.headers.get("Authorization"))
        return web.json_response({"kill": "global", "changed": True, **RECEIPT})

    elsewhere = await backends(any_path_app(thief))
    for code in (301, 302, 303, 307, 308):
        async def redirect(req: web.Request, code: int = code) -> web.StreamResponse:
            return web.Response(status=code, headers={
                "Location": f"http://127.0.0.1:{elsewhere}{req.path}"})

        env = await fake_admin(backends, redirect)
        res = await acli("kill", "--global", "--reason", "x", env=env)
        assert res.returncode == 1, (code, res.stdout)
        assert f"answered {code} redirecting to" in res.stderr and "not followed" in res.stderr
        assert "killed" not in res.stdout
        res = await acli("status", env=env)
        assert res.returncode == 1 and "not followed" in res.stderr
    assert seen == []  # the token never reached the other server


@pytest.mark.parametrize(("args", "answer", "why"), [
    (["kill", "--global", "--reason", "x"], {}, "no 'generation'"),
    (["kill", "--global", "--reason", "x"], {**RECEIPT}, "no 'kill'"),
    (["kill", "--global", "--reason", "x"], {**RECEIPT, "kill": "route:other"},
     "not 'global'"),
    (["kill", "--global", "--reason", "x"], {**RECEIPT, "kill": None}, "'kill' has the wrong"),
    (["kill", "--global", "--reason", "x"], "<html>ok</html>", "not JSON"),
    (["kill", "--global", "--reason", "x"], "[1, 2]", "not an object"),
    (["kill", "--global", "--reason", "x"],
     {"kill": "global", "generation": True, "applied": RECEIPT["applied"]}, "boolean"),
    (["unkill", "--route", "iris", "--reason", "x"], {**RECEIPT, "unkill": "route:iris",
                                                      "applied": {"instances": 1}},
     "no 'applied.acked'"),
    (["promote", "iris", "v2", "--reason", "x"], {**RECEIPT, "route": "iris",
                                                  "action": "rollback"}, "not 'promote'"),
    (["status"], {"instance": "x"}, "no 'generation'"),
    (["audit"], {"events": "none"}, "'events' has the wrong type"),
])
async def test_an_answer_that_is_not_what_was_asked_fails(backends, args: list[str],
                                                         answer: dict | str, why: str) -> None:
    port = await backends(_lying_api(answer))
    res = await acli(*args, env={"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}",
                                 "KILLGATE_TOKEN": "t"})
    assert res.returncode == 1, res.stdout
    assert why in res.stderr, res.stderr
    assert "None" not in res.stdout and "killed" not in res.stdout


async def test_an_unexpected_status_is_an_error(backends) -> None:
    port = await backends(_lying_api({**RECEIPT, "kill": "global"}, status=201))
    res = await acli("kill", "--global", "--reason", "x",
                     env={"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": "t"})
    assert res.returncode == 1 and "answered 201, not 200" in res.stderr


def test_expect_names_the_field() -> None:
    assert expect({"a": 1, "b": {"c": "x"}}, {"a": int, "b": {"c": str}}) == {
        "a": 1, "b": {"c": "x"}}
    with pytest.raises(ClientError, match=r"'b\.c' has the wrong type"):
        expect({"a": 1, "b": {"c": 2}}, {"a": int, "b": {"c": str}})


def test_the_cli_never_builds_its_own_redirect_follower() -> None:
    """Every request goes through cli/transport.py's opener (the one without redirects)."""
    root = Path(__file__).resolve().parent.parent / "gateway" / "cli"
    users = {p.name for p in root.glob("*.py") if "urlopen" in p.read_text()
             or "build_opener" in p.read_text()}
    assert users == {"transport.py"}


async def test_a_401_without_any_token_says_how_to_give_one(backends) -> None:
    """A new user who runs `killgate status` before exporting the demo's token got only
    `401 invalid_token: a valid bearer token is required`, with nothing saying none was sent."""
    port = await backends(_lying_api(
        {"error": {"type": "invalid_token", "message": "a valid bearer token is required"}},
        status=401))
    env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": ""}
    res = await acli("status", env=env)
    assert res.returncode == 1, res
    assert "401 invalid_token" in res.stderr and "KILLGATE_TOKEN" in res.stderr, res.stderr
    res = await acli("status", env={**env, "KILLGATE_TOKEN": "tok.en.x"})
    assert res.returncode == 1 and "KILLGATE_TOKEN" not in res.stderr, res.stderr


async def test_a_rollback_with_no_previous_stable_names_the_cli_option(backends) -> None:
    """On the demo, a new user's first `killgate rollback iris` answers `name one with 'to'`
    (the API's body field); the CLI user's way is `--to VERSION`."""
    env = await fake_admin(backends, _lying_api({"error": {
        "type": "no_previous_stable",
        "message": "route 'iris' has no earlier stable version in its history; name one "
                   "with 'to'"}}, status=409))
    res = await acli("rollback", "iris", "--reason", "r", env=env)
    assert res.returncode == 1, res
    assert "409 no_previous_stable" in res.stderr, res.stderr
    assert "killgate rollback iris --to VERSION" in res.stderr, res.stderr


async def test_timeout_bounds_the_wait_and_a_write_is_sent_once_more(backends) -> None:
    """An admin API that takes the request and never answers: the CLI waited 35 s a try
    (a write twice: 70 s) and printed nothing meanwhile; `--timeout` (or $KILLGATE_TIMEOUT)
    bounds each wait, and the write's second try is said on stderr. The same
    Idempotency-Key both times (it takes effect once)."""
    import asyncio
    import time

    keys: list[str | None] = []

    async def hang(req: web.Request) -> web.StreamResponse:
        keys.append(req.headers.get("Idempotency-Key"))
        await asyncio.sleep(60)
        return web.Response()

    env = await fake_admin(backends, hang)
    t0 = time.monotonic()
    res = await acli("kill", "--global", "--reason", "x", "--timeout", "0.5", env=env)
    took = time.monotonic() - t0
    assert res.returncode == 1 and took < 20, (took, res.stderr)
    assert "no answer within 0.5s (--timeout): sending it once more" in res.stderr
    assert "cannot reach the admin API" in res.stderr and "Traceback" not in res.stderr
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
    res = await acli("status", env={**env, "KILLGATE_TIMEOUT": "0.5"})
    assert res.returncode == 1 and "no answer within 0.5s" in res.stderr
    assert "once more" not in res.stderr  # (a read is not sent again)
    for bad in ("0", "-1", "abc", "601", "11m", "0s"):
        res = await acli("status", "--timeout", bad, env=env)
        assert res.returncode == 2 and "--timeout must be" in res.stderr, res.stderr
    # a duration with its unit, as --wait and --ttl take it (revnewuser5: `--timeout 500ms`
    # beside `--wait 5s` was refused "must be a number of seconds")
    res = await acli("status", "--timeout", "500ms", env=env)
    assert res.returncode == 1 and "no answer within 0.5s" in res.stderr, res.stderr
    res = await acli("status", env={**env, "KILLGATE_TIMEOUT": "500ms"})
    assert res.returncode == 1 and "no answer within 0.5s" in res.stderr, res.stderr
    res = await acli("status", env={**env, "KILLGATE_TIMEOUT": "nan"})
    assert res.returncode == 1 and "$KILLGATE_TIMEOUT must be" in res.stderr


@pytest.mark.parametrize("admin", ["{t}", "http://127.0.0.1:1/?token={t}", "http://h:1/{t} x"])
async def test_a_token_in_the_admin_url_is_never_echoed(admin: str) -> None:
    """`export KILLGATE_ADMIN_URL=$TOKEN` (the two variables swapped at 3 a.m.), or a URL
    carrying one: every message quoted the URL, and so printed the token (revcli6)."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcHMifQ.c2VjcmV0LXNpZ25hdHVyZQ"
    res = await acli("status", env={"KILLGATE_ADMIN_URL": admin.format(t=token),
                                    "KILLGATE_TOKEN": "tok.en.x"})
    assert res.returncode == 1, res
    assert "c2VjcmV0LXNpZ25hdHVyZQ" not in res.stderr + res.stdout, res.stderr
    assert "looks like a token (not shown)" in res.stderr, res.stderr


@pytest.mark.parametrize("admin", ["http://127.0.0.1:{p}/?key=s3cret", "http://127.0.0.1:{p}#x",
                                   "http://127.0.0.1:{p}/?"])
async def test_an_admin_url_with_a_query_is_refused(backends, admin: str) -> None:
    """A query or fragment in --admin: every call's path went after it (`/?key=s3cret/v1/kill`,
    a POST to the listener's root), answered with a 404 that named neither, and the query
    (which may hold a key) was echoed in every message (revcli6)."""
    seen: list[str] = []

    async def handler(req: web.Request) -> web.StreamResponse:
        seen.append(str(req.rel_url))
        return web.json_response({"error": {"type": "not_found", "message": "no"}}, status=404)

    port = await backends(any_path_app(handler))
    res = await acli("kill", "--global", "--reason", "x",
                     env={"KILLGATE_ADMIN_URL": admin.format(p=port), "KILLGATE_TOKEN": "t.o.k"})
    assert res.returncode == 1 and seen == [], (seen, res.stderr)
    assert "has a query or fragment" in res.stderr and "s3cret" not in res.stderr, res.stderr
