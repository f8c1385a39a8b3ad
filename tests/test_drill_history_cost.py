"""GET /v1/drills on a long audit trail (drill history: the `drill.end` events among the
newest 5000): the console asks for it every 3 s in every open tab. An in-process gateway
on a real redis-server whose trail holds 6000 events."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, write_config
from tests.drillrig import call, open_drill, routes
from tests.staterig import redis_section

pytestmark = pytest.mark.timeout(60)


def _xadd_many(redis: RedisServer, key: str, event: str, n: int) -> None:
    """`n` copies of `event` appended to the audit stream, in one pipeline."""
    def enc(*args: str) -> bytes:
        return f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", redis.port), timeout=10) as s:
        s.sendall(b"".join(enc("XADD", key, "*", "e", event) for _ in range(n)))
        s.sendall(enc("PING"))
        got = b""
        while not got.endswith(b"+PONG\r\n"):
            got += s.recv(1 << 16)


def _xrevranges(redis: RedisServer) -> int:
    m = re.search(r"cmdstat_xrevrange:calls=(\d+)", redis.cmd("INFO", "commandstats"))
    return int(m.group(1)) if m else 0


async def test_drill_history_is_not_read_again_from_an_unchanged_trail(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer) -> None:
    """With fewer than 20 drills among the trail's newest 5000 events (weekly drills, on
    any fleet some months old), every GET /v1/drills read and parsed all 5000 (ten pages of
    500): about 0.1 s on the loop the data plane runs on, during which its requests waited
    (measured: 93 ms), every 3 s for each console tab open. A trail that has not changed
    since the last read is now not read again; a drill ended since is listed."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    # (a long command timeout: a page of the trail read while the CI machine's other
    # worker runs took over the default 0.5 s once, 503; the reads' count is the test)
    state = redis_section(redis_server.url, "hist", tmp_path / "snap.json",
                          poll_interval="100ms", command_timeout="5s")
    async with running_gateway(write_config(tmp_path, routes(p1, p2), state=state)) as g:
        a = g.admin
        drill = await open_drill(session, a)
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "r"})
        assert st == 200, out
        st, page = await call(session, "GET", f"{a}/v1/audit?limit=1")
        filler = {**page["events"][0], "action": "kill"}  # (events of other kinds)
        _xadd_many(redis_server, "hist:audit", json.dumps(filler), 6000)
        st, first = await call(session, "GET", f"{a}/v1/drills")
        assert st == 200 and first["history"] == [], first  # (past the newest 5000)
        calls = _xrevranges(redis_server)
        st, again = await call(session, "GET", f"{a}/v1/drills")
        assert st == 200 and again == first
        assert _xrevranges(redis_server) - calls <= 1  # the newest event, to see it is the same
        drill = await open_drill(session, a)
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "r"})
        assert st == 200, out
        st, later = await call(session, "GET", f"{a}/v1/drills")
        assert [e["target"]["drill"] for e in later["history"]] == [drill]
