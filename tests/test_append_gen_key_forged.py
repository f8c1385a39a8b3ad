"""An event appended without a state change (a config reload's record, refused calls, the
fail-closed trips noted while the store was away, an alert in observe mode: `append_audit`)
is written while someone rewrites the store's (unsigned) generation key in a loop (found by
review revaudit5, hunting admin changes left without an audit event by one who writes
Redis): the append read the verified document, found the key disagreeing with it (not
`trusted`) and returned None, "no verified state to append to": a config reload was then
recorded by no instance, and said nowhere (its claim named no event, each sibling's
attempt ended the same), and a refused call's record was answered as "the state store
holds no state yet". Writes already committed over the verified document in that case
(`based_on`, writes.py); appends now do too. Real redis-server, an in-process gateway, the
key rewritten by a thread (the attacker does not wait for our loop)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.auditverify import verify_trail
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, write_config
from tests.test_forgery_staleness import resp
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(30)


async def test_an_append_lands_while_the_generation_key_is_rewritten(
        tmp_path: Path, backends: Any, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg, "a") as g:
        sync = g.gw.sync
        stop = threading.Event()

        def rewrite() -> None:
            n = 0
            with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as s:
                while not stop.is_set():
                    n += 1
                    s.sendall(resp("SET", "kgtest:gen", str(10_000 + n)))
                    got = b""
                    while not got.endswith(b"\r\n"):
                        got += s.recv(64)
                    time.sleep(0.0005)

        forger = asyncio.create_task(asyncio.to_thread(rewrite))
        try:
            await asyncio.sleep(0.2)
            evs = [await sync.append_audit(AuditDraft(
                "killgate/config", "config.reload", {"config": f"sha256:{i}"},
                "the config file changed")) for i in range(3)]
        finally:
            stop.set()
            await forger
        assert all(ev is not None for ev in evs), evs
        events = await sync.store.audit_events()
        ids = [e["id"] for e in events]
        assert all(ev["id"] in ids for ev in evs if ev is not None)
        head = (await sync.store.load()).doc
        assert head is not None
        r = verify_trail(events, head.audit_head, sync.store.audit_keys.keys())
        assert r.brk is None, r
