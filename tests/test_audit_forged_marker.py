"""A stream entry forged as the page script's "too large, not sent" marker (someone who can
write to redis, without the key: `XADD <prefix>:audit * over <bytes>`): the script sends an
entry over the size limit as its id and one field, `over`, with its size; an entry written
with that one field and a value that is not UTF-8 was taken for the marker and its value
decoded strictly, so every read of a page holding it raised (found by review revtrail):
`GET /v1/audit` answered 500 `internal` (the console's audit page, `killgate audit verify`
and drill history with it), and the audit mirror copied nothing past it while `/v1/status`
said it `ok`, refusing nothing. Now only a size (ASCII digits) is the marker;
any other such entry is an entry that is no event, shown `unparseable` as every one, a break
`audit verify` names and the mirror refuses, loudly.

Real redis-server, a real gateway and the real `killgate audit verify`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.state.redisaudit import RedisAudit
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.staterig import redis_state
from tests.test_audit import TOKEN, H
from tests.test_cli import acli
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(60)

_FORGE = ("return redis.call('XADD', KEYS[1], '*', 'over', ARGV[1] .. string.char(255))")


def test_a_marker_whose_value_is_not_a_size_is_an_entry_that_is_no_event() -> None:
    got = RedisAudit._decode([
        (b"1-0", [b"over", b"12\xff"]), (b"2-0", [b"over", b"5000000"]),
        (b"3-0", [b"over", b"\x1b[2J"])])
    assert [sid for sid, _ in got] == ["1-0", "2-0", "3-0"]
    assert all("unparseable" in ev for _, ev in got)
    assert "5000000 bytes" in got[1][1]["unparseable"]
    assert "\x1b" not in got[2][1]["unparseable"] and "\ufffd" not in got[0][1]["unparseable"]


async def test_a_forged_marker_entry_is_shown_unparseable_not_a_500(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "mirror.jsonl"
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(
        redis_server, tmp_path, extra=f"  audit_mirror: {mirror}\n"))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        forged = redis_server.cmd("EVAL", _FORGE, "1", "kgtest:audit", "12")
        await kill(session, g.admin, scope="route", route="iris")  # (after it)
        # the mirror stops at it, and says so (before: `ok`, nothing refused, nothing copied)
        await wait_until(lambda: g.gw.sync.mirror.status()["refused"] is not None, 10,
                         what="the mirror refused the entry that is no event")
        assert g.gw.sync.mirror.status()["ok"] is False
        async with session.get(f"{g.admin}/v1/audit", headers=H) as r:
            body = await r.json()
            assert r.status == 200, body
        shown = {e.get("id"): e for e in body["events"]}
        assert "unparseable" in shown[forged], shown[forged]
        res = await acli("audit", "verify", "--admin", g.admin, "--token", TOKEN)
        assert res.returncode == 1, res
        assert forged in res.stdout + res.stderr and "not an audit event" in res.stdout + \
            res.stderr, res
        assert "Traceback" not in res.stderr, res.stderr
