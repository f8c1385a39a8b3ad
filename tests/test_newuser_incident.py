"""A new user's first incident with a store (found by the new-user review revnewuser7, played
from the README alone: redis stopped mid-incident, then started again empty):

- `killgate audit` (and the console's audit panel) in the outage said "the state store cannot
  be reached, nothing was changed": a read changes nothing; it now says the trail could not be
  read, when to ask again and where to look meanwhile. A write still says nothing changed.
- AUDIT TRAIL LOST (status, console) sent the operator to "compare with the audit mirror" on
  an instance that keeps none: it now says there is none (only a backup holds the events),
  and names the mirror's file where there is one.
- `health: {interval: 1s}` alone was refused as "health.timeout: must be shorter than
  health.interval", a key the file never wrote: the values, and which is the default.
- no subcommand's `--help` said what it does or showed an example.
- `killgate status` after `weights iris v1=100` still read v2 50 in its weight column (the
  file's), `(latched)` beside: it now says what the latch runs, by whom, and how to end it.
- the demo's console showed iris-drill first, as a route like iris (`killgate status` too):
  nothing said that only drills reach it.
- the console in the outage said "0 live instance(s)" (`killgate status`: unknown) and "1
  request(s) failed" without saying which.
- an unkill of a local kill taken by mistake, the store still down, said only "nothing was
  changed": it now names the local kill, when it ends, and the journal to edit by hand.
- `killgate audit`'s table showed a break-glass unkill as a plain unkill (the console marks
  it), and a local kill merged when the store came back as a kill at the merge's time, with
  nothing saying it was taken earlier, elsewhere (neither did the console).

Real redis-server stopped and started, a real `killgate serve`, real backends, real Chromium
for the console's warnings module, the CLI in its own processes.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from gateway.cli.helptext import EXAMPLES
from gateway.cli.main import _parse, build_parser
from gateway.cli.statuswarn import store_warnings
from tests.backends import echo_app
from tests.chromium import Browser
from tests.conftest import (
    GatewayProcess,
    RedisServer,
    bearer,
    free_port,
    wait_until,
    write_config,
)
from tests.staterig import redis_state
from tests.test_cli import acli, cli
from tests.test_demo import demo_on_free_ports
from tests.test_local_kill import _routes

pytestmark = pytest.mark.timeout(120)

AUTH = bearer("killgate:admin", "alice", 10800)
GLASS = bearer("killgate:admin killgate:breakglass", "bob", 10800)
V2 = {"scope": "version", "route": "iris", "version": "v2", "reason": "INC-7: v2 returns 500"}


async def _get(s: ClientSession, url: str) -> tuple[int, Any]:
    async with s.get(url, headers=AUTH, timeout=ClientTimeout(total=10)) as r:
        return r.status, await r.json(content_type=None)


async def test_an_outage_and_an_empty_store_say_what_to_do(
        tmp_path: Path, redis_server: RedisServer, backends: Any, gateway_procs: Any,
        browser: Browser) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    gw: GatewayProcess = gateway_procs(write_config(
        tmp_path, _routes(p1, p2), state=redis_state(redis_server, tmp_path),
        extra="approvals: {unkill_version: 2}\n", listen=f"127.0.0.1:{free_port()}",
        admin=f"127.0.0.1:{free_port()}"))
    await asyncio.to_thread(gw.wait_ready)
    env = {"KILLGATE_ADMIN_URL": gw.admin, "KILLGATE_TOKEN": AUTH["Authorization"][7:]}
    kill = ("kill", "--route", "iris", "--version", "v2", "--reason", V2["reason"])
    async with ClientSession() as s:
        assert (await acli(*kill, env=env)).returncode == 0
        glass = {**env, "KILLGATE_TOKEN": GLASS["Authorization"][7:]}
        res = await acli("unkill", "--route", "iris", "--version", "v2", "--reason",
                         "INC-7: v2.1 out", "--break-glass", env=glass)
        assert res.returncode == 0, res.stderr
        res = await acli("audit", "--limit", "1", env=env)
        assert "unkill BREAK GLASS" in res.stdout, res.stdout  # (the console's mark, in words)
        # the table's weights are the file's: what the latch runs is said beneath it
        assert (await acli("weights", "iris", "v1=100", "--reason", "INC-7: all to v1",
                           env=env)).returncode == 0
        res = await acli("status", env=env)
        assert ('LATCHED: route iris runs weights by alice at 20' in res.stdout
                and '(stable v1; weights v1=100 v2=0; "INC-7: all to v1"), not the file\'s '
                "weights in the table: `killgate release iris` hands it back to the file"
                in res.stdout), res.stdout

        redis_server.kill()
        await wait_until(lambda: _unreadable(s, gw), 10, what="the audit unreadable")
        st, body = await _get(s, gw.admin + "/v1/audit")
        said = body["error"]["message"]
        assert st == 503 and body["error"]["type"] == "state_store_unavailable", body
        assert "nothing was changed" not in said and "ask again once it answers" in said, said
        assert "killgate status" in said and "--mirror" in said, said
        res = await acli("audit", env=env)
        assert res.returncode == 1 and "ask again once it answers" in res.stderr, res.stderr
        # a write still says that nothing changed (and offers the local kill)
        async with s.post(gw.admin + "/v1/kill", json=V2, headers=AUTH) as r:
            body = await r.json()
        assert r.status == 503 and "nothing was changed" in body["error"]["message"], body
        taken = await acli("kill", "--local", *kill[1:], env=env)
        assert taken.returncode == 5, taken.stderr
        # taken by mistake: the unkill's 503 says what stops it and how it ends
        res = await acli("unkill", *kill[1:], env=env)
        assert res.returncode == 1 and "v2 is stopped here by a local kill (local:" in \
            res.stderr and "merged as a kill, then unkill it" in res.stderr, res.stderr
        assert f"journal, {tmp_path}/snapshot-a.json.local-kills (README" in res.stderr
        # so too past the approval (break glass: the write itself, not a request for one)
        res = await acli("unkill", *kill[1:], "--break-glass", env=glass)
        assert res.returncode == 1 and "v2 is stopped here by a local kill" in res.stderr, \
            res.stderr
        # the console in the outage: the fleet's count is unknown, as the CLI says, not 0;
        # the banner names the reads that failed
        b = browser
        await asyncio.to_thread(b.sign_in, gw.admin, AUTH["Authorization"][7:], "alice")
        await asyncio.to_thread(b.wait, lambda d: "failed at" in b.text("#banner"),
                                "the failed reads said")
        assert "(audit trail: each panel says why)" in b.text("#banner"), b.text("#banner")
        assert b.text("[data-testid=fleet-live]") == (
            "live instances unknown (this instance cannot read the store)")

        redis_server.start()  # empty: no persistence; the instance re-seeds it

        async def lost() -> bool:
            st, doc = await _get(s, gw.admin + "/v1/status")
            return st == 200 and bool(doc["store"]["audit"].get("trail_lost"))
        await wait_until(lost, 20, what="the trail loss noticed")
        res = await acli("status", env=env)
        line = next((x for x in res.stdout.splitlines() if x.startswith("AUDIT TRAIL LOST")),
                    "")
        assert "keeps no audit mirror (state.audit_mirror)" in line, res.stdout
        assert "compare with the audit mirror" not in line, line
        _, doc = await _get(s, gw.admin + "/v1/status")
        # the merged local kill: its event is written now, its kill was taken in the outage
        await wait_until(lambda: _merged(s, gw), 20, what="the local kill merged")
        res = await acli("audit", "--limit", "1", env=env)
        row = res.stdout.splitlines()[1]
        assert row.split()[2:4] == ["kill", "(LOCAL:"], res.stdout
        assert f"on {doc['instance']}, merged into the store at this time)" in row, row

    # the console draws the same words, from the same documents (ui/js/warnings.js, audit.js)
    browser.sign_in(gw.admin, AUTH["Authorization"][7:], "alice")
    browser.wait(lambda d: "taken 20" in browser.text("#audit"), "the local kill's mark")
    assert "LOCAL" in browser.text("#audit")
    drawn = _console_lines(browser, doc)
    assert any("keeps no audit mirror" in x for x in drawn), drawn
    doc["store"]["audit"]["mirror"] = {"path": "/var/lib/killgate/audit.jsonl"}
    for lines in (_console_lines(browser, doc), store_warnings(doc)):
        said = next(x for x in lines if "AUDIT TRAIL LOST" in x)
        assert ("compare with the audit mirror (/var/lib/killgate/audit.jsonl: `killgate "
                "audit verify --mirror /var/lib/killgate/audit.jsonl`)") in said, said


async def _merged(s: ClientSession, gw: GatewayProcess) -> bool:
    st, page = await _get(s, gw.admin + "/v1/audit?limit=1")
    return st == 200 and bool(page["events"]) and "local" in page["events"][0]


async def _unreadable(s: ClientSession, gw: GatewayProcess) -> bool:
    return (await _get(s, gw.admin + "/v1/audit"))[0] == 503


def _console_lines(b: Browser, doc: dict[str, Any]) -> list[str]:
    got: list[str] = b.d.execute_async_script("""
        const [doc, done] = arguments;
        import('/ui/js/warnings.js').then((m) => done(m.warnings(doc, null, null)
          .map(([kind, word, text]) => `${kind} ${word} ${text}`)))
          .catch((exc) => done([String(exc)]));""", doc)
    return got


def test_a_default_health_timeout_is_said_as_one(tmp_path: Path) -> None:
    cfg = tmp_path / "k.yaml"
    cfg.write_text("routes:\n  - name: iris\n    match: {path_prefix: /v2/models/iris}\n"
                   "    stable: v1\n    versions:\n      - {name: v1, url: \"http://127.0.0.1:9\"}\n"
                   "    health: {path: /v2/health/ready, interval: 1s}\n")
    res = cli("check", str(cfg))
    assert res.returncode == 1
    assert ("routes[0].health.timeout: must be shorter than health.interval (timeout 1s, the "
            "default; interval 1s): lower timeout (e.g. timeout: 500ms) or raise interval"
            ) in res.stderr, res.stderr


@pytest.mark.parametrize("command", ["kill", "unkill", "status", "rollback", "audit", "check",
                                     "drill kill"])
def test_help_says_what_a_command_does_with_examples(command: str) -> None:
    res = cli(*command.split(), "--help")
    assert res.returncode == 0, res.stderr
    head = res.stdout.split("\n\n")[1]  # (after the usage: the command's own line)
    assert not head.startswith(("options:", "positional arguments:")), res.stdout
    assert "examples:\n  killgate " in res.stdout, res.stdout


@pytest.mark.parametrize(("key", "example"), [(k, e) for k, es in EXAMPLES.items() for e in es])
def test_every_help_example_parses(key: str, example: str) -> None:
    """An example the parser would refuse (or of another command) is worse than none."""
    line = example.split("  #")[0].split("&&")[-1].strip()
    if line.startswith("export "):
        line = line.split("$(", 1)[1].rstrip(")")
    words = shlex.split(line)
    assert words[0] == "killgate", example
    args = _parse(build_parser(), words[1:])
    assert [args.command, *([args.drill_command] if key.startswith("drill ") else [])] \
        == key.split()[:2 if key.startswith("drill ") else 1], example


def test_the_demos_drill_route_is_marked_as_one(tmp_path: Path, browser: Browser) -> None:
    """`killgate demo`'s console showed iris-drill first (the routing table's order: its
    header match is the more specific), a route card like iris's with nothing saying that no
    user reaches it; `killgate status` likewise. `drill_for` in /v1/status, said in both."""
    with demo_on_free_ports(tmp_path) as text:
        admin = re.search(r"admin  (http://127\.0\.0\.1:\d+)", text)
        token = re.search(r"export KILLGATE_TOKEN=(\S+)", text)
        assert admin and token, text
        res = cli("--admin", admin.group(1), "--token", token.group(1), "status")
        rows = [x.split("  ")[0] for x in res.stdout.splitlines() if x.startswith("iris")]
        assert set(rows) == {"iris", "iris-drill (drills of iris)"}, res.stdout
        browser.sign_in(admin.group(1), token.group(1), "demo")
        browser.wait(lambda d: "drill route of iris" in browser.text(
            "article[data-route=iris-drill] header"), "the drill route's badge")
        assert "drill route" not in browser.text("article[data-route=iris] header")
