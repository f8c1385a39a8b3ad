"""A reload that drops or renames a route a runtime override latches (hostile GitOps
review): the override is keyed on the route's name, so a file renaming the route (the same
match, another name) served the version the rollback took the route off, at the file's
weights, with nothing refused, logged as a warning or shown. Such a file is refused as one
dropping a latched version is, and `release` of the route is the way out."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(30)

ROLLOUT = "killgate:rollout killgate:read"


def _iris(name: str, p1: int, p2: int) -> str:
    """A route `name` matching iris's requests: v2 the file's stable, v1 at weight 0."""
    return textwrap.dedent(f"""\
        - name: {name}
          match: {{path_prefix: /v2/models/iris}}
          stable: v2
          versions:
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 100}}
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 0}}
        """)


def _other(p: int) -> str:
    return textwrap.dedent(f"""\
        - name: other
          match: {{path_prefix: /v2/models/other}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}
        """)


async def _served(session: ClientSession, url: str, n: int = 10) -> set[str]:
    seen = set()
    for i in range(n):
        async with session.get(f"{url}/v2/models/iris/x", headers={"x-user": str(i)}) as r:
            seen.add(f"{r.status} {r.headers.get('x-killgate-version')}")
    return seen


@pytest.mark.parametrize("how", ["renamed", "removed"])
async def test_a_reload_that_drops_a_latched_route_is_refused_until_it_is_released(
        tmp_path: Path, backends, session: ClientSession, how: str) -> None:
    p1, p2, p3 = [await backends(echo_app(v)) for v in ("v1", "v2", "o")]
    cfg = write_config(tmp_path, _iris("iris", p1, p2) + _other(p3))
    async with running_gateway(cfg) as g:
        async with session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                                json={"to": "v1", "reason": "INC-7: v2 is bad"}) as r:
            assert r.status == 200, await r.text()
        assert await _served(session, g.url) == {"200 v1"}
        # a commit from before the incident renames the route (or drops it)
        old = g.gw.loaded.digest
        nxt = (_iris("iris-main", p1, p2) if how == "renamed" else "") + _other(p3)
        cfg.write_text(write_config(tmp_path, nxt, name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None
                         or g.gw.loaded.digest != old, 10)
        # before the fix: applied, and (renamed) v2, the version rolled back from, served
        assert g.gw.loaded.digest == old, await _served(session, g.url)
        err = g.gw.watcher.outcome.last_error
        assert "'iris'" in err and "rollback" in err and "killgate release iris" in err, err
        assert await _served(session, g.url) == {"200 v1"}
        # the way out the message names: the release hands the route to the file, and the
        # refused file goes live (read again as the overrides change)
        async with session.post(f"{g.admin}/v1/routes/iris/release", headers=auth(ROLLOUT),
                                json={"reason": "INC-7 over: retiring iris"}) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: g.gw.loaded.digest != old
                         and g.gw.watcher.outcome.last_error is None, 10)
        assert await _served(session, g.url) == ({"200 v2"} if how == "renamed"
                                                 else {"404 None"})


async def test_diff_fails_a_file_the_running_gateway_refuses_for_a_latched_route(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """`killgate diff` (review before merge) says what the reload would: exit 1, naming the
    route and `release` (before: exit 2, a rename shown as a change)."""
    from tests.conftest import admin_token
    from tests.test_cli import acli

    p1, p2 = [await backends(echo_app(v)) for v in ("v1", "v2")]
    cfg = write_config(tmp_path, _iris("iris", p1, p2))
    renamed = write_config(tmp_path, _iris("iris-main", p1, p2), name="renamed.yaml")
    async with running_gateway(cfg) as g:
        async with session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                                json={"to": "v1", "reason": "INC-7: v2 is bad"}) as r:
            assert r.status == 200, await r.text()
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        res = await acli("diff", str(renamed), env=env)
        assert res.returncode == 1, res.stdout
        assert "routes: the running gateway would refuse it: route 'iris' is latched" \
            in res.stderr and "killgate release iris" in res.stderr, res.stderr


async def test_an_override_on_a_route_the_config_lacks_can_be_released(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """An instance that starts on a file without the latched route (a start is not refused
    for it) holds an orphan override: it comes back in force when a file names the route
    again, and a file re-adding the route without the old versions is refused, saying to
    release it first. The release answered 404 unknown_route (the API knew only the config's
    routes), so the way out the refusal named did not exist."""
    p1, p2, p3, p4 = [await backends(echo_app(v)) for v in ("v1", "v2", "o", "n1")]
    cfg = write_config(tmp_path, _iris("iris", p1, p2) + _other(p3))
    async with running_gateway(cfg) as g, session.post(
            f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
            json={"to": "v1", "reason": "INC-7: v2 is bad"}) as r:
        assert r.status == 200, await r.text()
    cfg = write_config(tmp_path, _other(p3))  # the route retired, at a restart
    async with running_gateway(cfg) as g:
        assert "iris" in g.gw.holder.doc.overrides
        # said: /v1/status and `killgate status` (before: nowhere)
        async with session.get(f"{g.admin}/v1/status", headers=auth(ROLLOUT)) as r:
            st = await r.json()
        [orphan] = st["overrides_unrouted"]
        assert (orphan["route"], orphan["kind"], orphan["stable"]) == ("iris", "rollback", "v1")
        from gateway.cli.admin import _status_text
        assert "LATCHED, NOT ROUTED: the config has no route iris (rollback by alice" \
            in _status_text(st)
        # a new iris (other versions) comes: refused while the old override latches it
        readd = textwrap.dedent(f"""\
            - name: iris
              match: {{path_prefix: /v2/models/iris}}
              stable: n1
              versions:
                - {{name: n1, url: "http://127.0.0.1:{p4}", weight: 100}}
            """)
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, readd + _other(p3), name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None, 10)
        assert "killgate release iris" in g.gw.watcher.outcome.last_error
        async with session.post(f"{g.admin}/v1/routes/iris/release", headers=auth(ROLLOUT),
                                json={"reason": "iris was retired"}) as r:
            body = await r.json()
            assert r.status == 200, body  # (404 unknown_route before)
        assert "iris" not in g.gw.holder.doc.overrides
        await wait_until(lambda: g.gw.loaded.digest != old
                         and g.gw.watcher.outcome.last_error is None, 10)
        async with session.get(f"{g.url}/v2/models/iris/x") as r:
            assert r.headers.get("x-killgate-version") == "n1"
        async with session.get(f"{g.admin}/v1/audit?limit=20", headers=auth(ROLLOUT)) as r:
            events = (await r.json())["events"]
        [ev] = [e for e in events if e["action"] == "release"]
        assert ev["before"]["latched"] and ev["before"]["kind"] == "rollback", ev
        # a release of a route neither the config nor the state knows is still a 404
        async with session.post(f"{g.admin}/v1/routes/nope/release", headers=auth(ROLLOUT),
                                json={"reason": "x"}) as r:
            assert r.status == 404
