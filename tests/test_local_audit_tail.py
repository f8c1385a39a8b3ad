"""The newest page of a long local audit trail (state/local.py): read from the file's end.

`GET /v1/audit` (the console asks for it every 3 s while open) read and parsed the whole
trail to show its newest 25 events. The trail only grows, also by denied calls anyone
can cause (17 events a minute): a month of that is ~700,000 events, several hundred MB
parsed, holding the GIL the data plane needs, every 3 s."""

from __future__ import annotations

import json
import time
from pathlib import Path

from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, write_config

OLD = 100_000  # events older than the gateway's own


async def test_the_newest_page_costs_the_same_on_a_long_trail(tmp_path: Path,
                                                              backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    old = "".join(json.dumps({"id": f"{i:032x}", "action": "authn_fail", "reason": "x" * 300,
                              "hash": f"{i:064x}"}) + "\n" for i in range(OLD))
    (tmp_path / "store.json.audit.jsonl").write_text(old)
    async with running_gateway(cfg) as g, ClientSession() as s:
        async with s.post(g.admin + "/v1/kill", json={"scope": "global", "reason": "a"},
                          headers=bearer("killgate:kill")) as r:
            assert r.status == 200
        read = bearer("killgate:read")
        async with s.get(g.admin + "/v1/audit?limit=25", headers=read) as r:
            assert r.status == 200  # (warm)
        start = time.process_time()
        async with s.get(g.admin + "/v1/audit?limit=25", headers=read) as r:
            page = await r.json()
        spent = time.process_time() - start
        assert page["events"][0]["action"] == "kill"
        assert page["events"][0]["hash"] == page["head"]
        assert len(page["events"]) == 25 and page["next"] == page["events"][-1]["id"]
        last = int(page["events"][-1]["id"], 16)
        assert last > OLD - 25  # (the gateway's own events, then the newest old ones)
        # the next page goes on from there, as before
        async with s.get(g.admin + f"/v1/audit?limit=2&before={page['next']}",
                         headers=read) as r:
            assert [e["id"] for e in (await r.json())["events"]] == [
                f"{last - 1:032x}", f"{last - 2:032x}"]
    assert spent < 0.15, f"{spent:.2f}s of CPU for the newest 25 of {OLD} events"


async def test_a_line_that_is_json_but_no_event_is_reported_not_a_crash(tmp_path: Path,
                                                                        backends) -> None:
    """A line inserted into the local trail that is JSON but not an object (`[]`), or nested
    past the parser's depth, was read as an event: `killgate audit verify` ended in an
    AttributeError traceback instead of naming the break (RELIABILITY row 48), and such a
    last line made every write, a kill too, a 500 with a traceback (a TypeError)."""
    from tests.test_cli import acli

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    trail = tmp_path / "store.json.audit.jsonl"
    kill = {"scope": "route", "route": "iris", "reason": "a"}
    async with running_gateway(cfg) as g, ClientSession() as s:
        for path in ("/v1/kill", "/v1/unkill", "/v1/kill"):
            async with s.post(g.admin + path, json=kill, headers=bearer("killgate:kill")) as r:
                assert r.status == 200
        lines = trail.read_bytes().splitlines(keepends=True)
        trail.write_bytes(b"".join([lines[0], b"[]\n", b"[" * 100_000 + b"\n", *lines[1:]]))
        env = {"KILLGATE_ADMIN_URL": g.admin,
               "KILLGATE_TOKEN": bearer("killgate:read")["Authorization"][7:]}
        res = await acli("audit", "verify", env=env)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res
        assert "BROKEN at event #1" in res.stderr and "not an audit event" in res.stderr, res
        trail.write_bytes(b"".join([*lines, b"[]\n"]))
        # such a last line: the write continues from the head the signed state anchors
        # (test_local_unwritable), the line left for `audit verify` to name
        async with s.post(g.admin + "/v1/unkill", json=kill,
                          headers=bearer("killgate:kill")) as r:
            assert r.status == 200, await r.text()
        assert "route:iris" not in g.gw.holder.doc.kills
        res = await acli("audit", "verify", env=env)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res
        assert "not an audit event" in res.stderr, res
