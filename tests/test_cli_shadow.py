"""`killgate shadow report ROUTE` (cli/shadow.py): the table, --json, errors, --help."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.cli.shadow import render
from tests import cli_fork
from tests.conftest import admin_token, running_gateway, wait_until, write_config
from tests.shadow_backends import chat_app, chat_request, v2_app, v2_request

Start = Callable[[web.Application], Awaitable[int]]
TOKEN = admin_token("killgate:read", "t", 3 * 3600)


async def cli(*args: str) -> tuple[int, str, str]:
    """`killgate *args` forked from a process that imported the CLI (tests/cli_fork.py), in a
    thread: the gateway under test runs on this loop."""
    res = await asyncio.to_thread(cli_fork.run, list(args), dict(os.environ), os.getcwd(), 30)
    return res.returncode, res.stdout, res.stderr


@pytest.mark.parametrize("args", [["shadow", "--help"], ["shadow", "report", "--help"]])
def test_help(args: list[str]) -> None:
    res = cli_fork.run(args, dict(os.environ), os.getcwd(), 30)  # (tests/cli_fork.py)
    assert res.returncode == 0 and "usage: killgate shadow" in res.stdout


async def test_report_table_json_and_errors(tmp_path: Path, backends: Start,
                                            session: ClientSession) -> None:
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "change" if x == 3 else "noise"))
    cfg = write_config(tmp_path, f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  protocol: v2
  shadow: {{version: v2, sample: 1.0, noise: {{sample: 1.0}}}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
""")
    async with running_gateway(cfg) as gw:
        for x in range(8):
            async with session.post(gw.url + "/v2/models/iris/infer", data=v2_request(x)) as r:
                assert r.status == 200
        base = ("--admin", gw.admin, "--token", TOKEN)

        async def eight() -> bool:
            code, out, _ = await cli("shadow", "report", "iris", "--json", *base)
            return code == 0 and json.loads(out)["compared"] == 8

        await wait_until(eight, 20, 0.2)
        code, out, err = await cli("shadow", "report", "iris", *base)
        assert code == 0, err
        assert "agreement 87.5% (7 of 8 compared" in out
        assert "noise floor: 8 pair(s)" in out
        assert "DISAGREEMENTS" in out and "values outputs[probs].data" in out
        code, _, err = await cli("shadow", "report", "nope", *base)
        assert code == 1 and "404 unknown_route" in err
        code, _, err = await cli("shadow", "report", "iris", "--admin", gw.admin)
        assert code == 1 and "401" in err
        code, _, err = await cli("shadow", "report", "iris", "--limit", "0", *base)
        assert code == 1 and "--limit must be from 1 to 100" in err


def test_render_escapes_what_the_api_carries() -> None:
    """Bodies in a disagreement come from clients and backends: control characters are
    shown escaped, never sent to the terminal."""
    rep = {"route": "iris", "version": "v2", "compare": "json", "sample": 1.0, "instances": 1,
           "compared": 1, "agreed": 0, "agreement": 0.0, "outcomes": {}, "copies": {},
           "noise": {"pairs": 1, "paths": {"\x1b[2Jx": 1}},
           "latency_ms": {"primary": {"p50": 1.0, "p99": None}, "shadow": {}},
           "disagreements": [{"time": "t", "request": "\x1b[31mred", "differences": [],
                              "primary": {"status": 200, "body": "a"},
                              "shadow": {"status": 200, "body": "\x1b]0;title\x07"}}]}
    text = render(rep)
    assert "\x1b" not in text and "agreement 0.0%" in text and "primary 1/-" in text


def test_render_of_records_of_other_shapes_is_no_traceback() -> None:
    """A kept disagreement is whatever the state store held (another killgate version's
    record, or anyone who can write to the store): the report passes it on as it is, and a
    record whose differences or answers are not objects crashed the command with an
    AttributeError traceback. Such parts are shown as they are, escaped."""
    rep = {"route": "iris", "version": "v2", "compared": 1, "agreed": 0,
           "disagreements": [
               {"time": "t", "differences": "values", "primary": "p", "shadow": 7},
               {"time": 5, "differences": ["values", 3, {"kind": "text", "path": 1}],
                "primary": {"status": 200, "body": {"a": 1}}, "shadow": None},
               {"differences": {"kind": "x"}, "primary": ["\x1b[2J"], "shadow": {}}]}
    text = render(rep)
    assert "DISAGREEMENTS" in text and "text 1" in text and "\x1b" not in text


def test_render_says_the_gate_counts_requests_the_primary_answered_2xx_only() -> None:
    """The report's own agreement counts every comparison; the gate's only those of
    requests the primary answered 2xx: the line says which, and how many others there were."""
    rep = {"route": "iris", "version": "v2", "compared": 150, "agreed": 150, "agreement": 1.0,
           "gate": {"open": True, "compared": 50, "agreed": 50, "failures": 0,
                    "agreement": 1.0, "other_status": 100}}
    text = render(rep)
    assert "agreement 100.0% (150 of 150 compared" in text, text
    assert "gate: open (100.0% agreed of 50 counted, 0 of them copies the shadow failed, only " \
        "requests the primary answered 2xx; 100 compared with another status of the " \
        "primary's not counted)" in text, text


async def test_the_table_shows_what_each_side_answered_where_they_differ(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """Found trying the shadow comparison as a new user (issue #13): each answer's cell was
    the first 40 characters of its body, for a chat answer `{"id":"chatcmpl-...` on both
    sides, so the table never showed what the shadow answered instead; now each cell is the
    side's value at the first difference's path, whole answers and streamed ones alike."""
    p1 = await backends(chat_app("v1"))
    p2 = await backends(chat_app("v2", lambda x: "text"))
    cfg = write_config(tmp_path, f"""\
- name: chat
  match: {{path_prefix: /v1/chat}}
  stable: v1
  protocol: openai
  shadow: {{version: v2, sample: 1.0}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
""")
    async with running_gateway(cfg) as gw:
        for x in (1, 2):  # one whole, one streamed
            async with session.post(gw.url + "/v1/chat/completions",
                                    data=chat_request(x, stream=x == 2)) as r:
                assert r.status == 200
                await r.read()
        base = ("--admin", gw.admin, "--token", TOKEN)

        async def two() -> bool:
            code, out, _ = await cli("shadow", "report", "chat", "--json", *base)
            return code == 0 and len(json.loads(out)["disagreements"]) == 2

        await wait_until(two, 20, 0.2)
        code, out, err = await cli("shadow", "report", "chat", *base)
        assert code == 0, err
        rows = out.split("DISAGREEMENTS (newest first)")[1].splitlines()[2:]
        assert len(rows) == 2, out
        for row in rows:
            assert "text choices[0].text" in row, out
            assert "200 text=Answer number" in row and "Paris." in row and "Lyon." in row, out


def test_cells_of_hostile_records_fall_back_to_the_body() -> None:
    """A kept record is what the store held: a streamed body nested past the parser's depth,
    choices of another type, a path naming nothing: the cell shows the body's start, never a
    traceback."""
    deep = "data: " + "[" * 100_000 + "\n"
    rep = {"route": "chat", "version": "v2", "compared": 3, "agreed": 0, "disagreements": [
        {"differences": [{"kind": "text", "path": "choices[0].text"}],
         "primary": {"status": 200, "body": deep}, "shadow": {"status": 200, "body": "x"}},
        {"differences": [{"kind": "text", "path": "choices[0].text"}],
         "primary": {"status": 200, "body": 'data: {"choices": 5}\n'},
         "shadow": {"status": 200, "body": {"choices": [{"message": "m"}]}}},
        {"differences": [{"kind": "values", "path": "outputs[p].data"}],
         "primary": {"status": 200, "body": {"outputs": "x"}},
         "shadow": {"status": 200, "body": {"outputs": [{"name": "p", "data": [1]}]}}}]}
    text = render(rep)
    assert "200 data:" in text and "200 data=[1]" in text, text


async def test_status_marks_the_shadow(tmp_path: Path, backends: Start) -> None:
    """`killgate status` showed the shadow as a version of weight 0 (found as a new user,
    issue #13: it read as an idle version ready to promote): its row says `shadow` in the
    stable column, and why it gets no copies when it does not (here: killed)."""
    p1, p2 = await backends(v2_app("v1")), await backends(v2_app("v2"))
    cfg = write_config(tmp_path, f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  protocol: v2
  shadow: {{version: v2, sample: 1.0}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
""")
    admin = admin_token("killgate:admin", "t", 3 * 3600)
    async with running_gateway(cfg) as gw:
        base = ("--admin", gw.admin, "--token", admin)

        async def row() -> str:
            code, out, err = await cli("status", *base)
            assert code == 0, err
            return next(x for x in out.splitlines() if x.startswith("iris") and " v2 " in x)

        assert (await row()).split()[-1] == "shadow"
        code, _, err = await cli("kill", "--route", "iris", "--version", "v2", "--reason",
                                 "shadow off", *base)
        assert code == 0, err
        assert (await row()).endswith("shadow (off: killed)")
