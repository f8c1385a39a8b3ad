"""The audit mirror catching up over a redis trail whose pages are cut by their bytes.

A mirror that resumes behind its file's end (its cursor file lost, or a sibling worker
appended past it) skips the pages it copied already: a page that does not reach the file's
last event was taken as "copied already" only when it was full (BATCH events); any shorter
page meant the store's end, where the file's last event not found is a trail that does not
continue the mirror: refused, the tamper alarm, copying stopped for good. Since impaudit4 a
redis page is also cut at 1 MiB of entries (redisaudit.PAGE_BYTES): a trail with large
events (a config reload's changes) made every such resume a false refusal. Found by review
(revmerge33) of impaudit4's page cap against the mirror's catch-up.

Real redis-server; the mirror's file and cursor on disk.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.auditverify import verify_trail
from gateway.domain.statedoc import StateDoc
from gateway.state.mirror import AuditMirror
from gateway.state.redis import RedisStore
from gateway.state.signing import Key, Keyring
from gateway.telemetry.metrics import Metrics
from tests.conftest import RedisServer, wait_until

pytestmark = pytest.mark.timeout(30)

KEYS = Keyring(Key.of(b"m" * 32))


def _lines(path: Path) -> list[dict]:
    """The file's whole lines (one being appended meanwhile is not one yet)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(x) for x in text[:text.rfind("\n") + 1].splitlines()]


async def _run(mirror: AuditMirror, until: int) -> None:
    task = asyncio.create_task(mirror.run())
    try:
        await wait_until(lambda: len(_lines(mirror.path)) >= until or mirror.refused, 10,
                         what=f"{until} events copied")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_mirror_resuming_behind_its_file_over_pages_cut_by_bytes_is_not_refused(
        tmp_path: Path, redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, "kgcut", 2.0, keys=KEYS, audit_keys=KEYS)
    await store.open()
    try:
        await store.commit(None, StateDoc(), None)
        big = "x" * 300_000  # (about four to a 1 MiB page)
        for i in range(10):
            await store.commit("0", StateDoc(), AuditDraft("alice", "config.reload",
                                                           {"i": i}, f"r{i}", before=big))
        path = tmp_path / "m.jsonl"
        await _run(AuditMirror(store, path, KEYS, Metrics(), 0.02), 10)
        assert len(_lines(path)) == 10
        path.with_name(path.name + ".cursor").unlink(missing_ok=True)  # (lost: it resumes from the start)
        await store.commit("0", StateDoc(), AuditDraft("alice", "kill", {"i": 10}, "r10"))
        again = AuditMirror(store, path, KEYS, Metrics(), 0.02)
        await _run(again, 11)
        assert again.refused is None, again.refused
        lines = _lines(path)
        assert [e["target"]["i"] for e in lines] == list(range(11))  # (none twice)
        assert verify_trail(lines, None, KEYS.keys()).brk is None
    finally:
        await store.close()
