"""A flood of large forged pushes on `<prefix>:events` (Redis write access, no key).

Every pushed document was verified as it came, on the loop that serves requests: 8 MB
ones with the right key id cost a MAC over 8 MB each, and a serial client's requests ran
about 6 times slower (p99 25 ms). A push over PUSH_INLINE_BYTES is now only a hint: the
store is re-read, at most 4 times a second. A genuine large document still arrives.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.state.store import PUSH_INLINE_BYTES
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_forgery import plant, stored_doc
from tests.test_killswitch import redis_state, status_of

pytestmark = pytest.mark.timeout(60)

FLOODER = textwrap.dedent("""\
    import socket, sys, time
    port, head, size, seconds = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]), float(sys.argv[4])
    msg = head + b"\\n" + b"{" + b" " * size + b"}"
    cmd = (b"*3\\r\\n$7\\r\\nPUBLISH\\r\\n$13\\r\\nkgtest:events\\r\\n$%d\\r\\n" % len(msg)) + msg + b"\\r\\n"
    s = socket.create_connection(("127.0.0.1", port))
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        s.sendall(cmd)
        s.recv(64)
        n += 1
    print(n)
""")


async def test_large_forged_pushes_are_not_verified_on_the_loop_and_a_large_genuine_one_arrives(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path, "a", poll="60s")
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        raw = redis_server.cmd("GET", "kgtest:state")
        kid = raw.split(" ", 2)[1]  # (readable by whoever reads Redis: README, Trust)
        metrics = g.gw.metrics
        forged_head = f"KGS1 {kid} {'0' * 64}"
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOODER, str(redis_server.port), forged_head,
            str(4 * 1024 * 1024), "1.5", stdout=asyncio.subprocess.PIPE)
        try:
            assert (await status_of(session, g.url))[0] == 200
            out, _ = await asyncio.wait_for(flood.communicate(), 30)
        finally:
            if flood.returncode is None:
                flood.kill()
                await flood.wait()
        sent = int(out)
        assert sent >= 3
        await wait_until(lambda: metrics.get("killgate_state_pushes_not_read_total") >= 1, 5,
                         what="a large push to be seen")
        # none of them was verified as it came (a verified forgery counts as unverified)
        assert metrics.get("killgate_state_unverified_total", ("push",)) == 0
        # a genuine document over the limit, with a kill, still comes into force
        doc = stored_doc(redis_server)
        big = {**doc, "generation": doc["generation"] + 1,
               "identities": {**doc["identities"], "pad": {"v": {"x": "p" * PUSH_INLINE_BYTES}}},
               "kills": {"route:iris": {"scope": "route", "route": "iris", "version": None,
                                        "actor": "alice", "reason": "bad", "time": "t",
                                        "generation": doc["generation"] + 1,
                                        "abort_inflight": True}}}
        # the flood may have made redis drop the subscriber (its output buffer limit: README
        # "Trust"); a push published while it resubscribes is never heard (its re-read
        # brings the document instead): publish once it listens again (a CI run lost it)
        await wait_until(lambda: redis_server.cmd("PUBSUB", "NUMSUB", "kgtest:events")
                         .split()[-1] == ":1", 10, 0.05, "the subscriber back")
        seen = metrics.get("killgate_state_pushes_not_read_total")
        assert len(plant(redis_server, big)) > PUSH_INLINE_BYTES
        # (brought by the push's re-read: the next poll is 60 s away)
        await wait_until(lambda: "route:iris" in g.gw.holder.doc.kills, 5, what="the kill")
        # (a re-read the flood's last pushes started may have brought it a moment before
        # this push is read: a CI run saw the kill in force and the count not moved yet)
        await wait_until(lambda: metrics.get("killgate_state_pushes_not_read_total") >= seen + 1,
                         5, what="the large push seen, not read")
        assert (await status_of(session, g.url)) == (503, "killed")


async def test_a_large_forged_ack_is_refused_unread(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """The acks channel is read on the loop that serves requests too, and an ack had no
    size limit: 8 MB forged ones naming the real key id had their MACs computed there (a
    flood took a serial client's p99 from 4 to 20 ms, 3 times fewer requests served). An
    ack over MAX_ACK_BYTES (a real one is a few hundred bytes) is refused unread."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="the first sync")
        kid = redis_server.cmd("GET", "kgtest:state").split(" ", 2)[1]
        tamper = g.gw.sync.tamper
        big = f"{kid} {'0' * 64} 1 1 - {'i' * (2 * 1024 * 1024)}"
        redis_server.cmd("PUBLISH", "kgtest:acks", big)
        await wait_until(lambda: tamper.counts.get("ack", 0) >= 1, 5, what="the ack refused")
        assert tamper.last is not None and "not read" in tamper.last["problem"], tamper.last
        # a genuine ack is far below the limit, and still heard
        own = redis_server.cmd("HGET", "kgtest:instances", g.gw.sync.instance).split(" ", 1)[1]
        assert len(own) < 512
        assert g.gw.sync.instance in g.gw.sync.peers.acks
        assert (await status_of(session, g.url))[0] == 200
        # so too an instance's addresses (read with the heartbeats; forged between two of
        # its heartbeats, or for good under a name whose heartbeat is replayed)
        store = g.gw.sync.store
        assert store._open_urls(g.gw.sync.instance, big.encode()) is None
        assert "not read" in tamper.last["problem"], tamper.last
