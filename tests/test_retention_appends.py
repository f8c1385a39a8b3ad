"""Audit retention under back-to-back appends (several instances reloading, acting): a
trim read the trail, decided, then found the state document moved (each append is a new
one) and changed nothing, every time: no trim landed in seconds and the trail grew past
its bound. A trim now seals its checkpoint again on the document as it is right before
the trim script (redistrim.py): the decision stands while the trail only grew at its end.
Real redis, two instances appending back to back (a task each, through the real store)
while one trims every 50 ms; `killgate audit verify` after. Without the change: 0 trims of
~18 tries."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.audit import AuditDraft
from gateway.errors import StoreConflict
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_audit_retention import _fill, _state, _verify

# (~5 s on a quiet machine; ~25-45 s on a loaded CI one: 150 appends to fill the trail one
# by one, then the CLI's verify. 30 s ended a run that was only slow)
pytestmark = pytest.mark.timeout(60)

#: trims that must land among the tries. It was "half the tries": at load 21-27 (CI's 2
#: cores) 5 of 22 landed, and the test failed 3 of 5. The appends run on this test's loop,
#: beside the trim: a loaded loop spends many turns between the trim's fresh read and its
#: script, and both instances append in that window. The script cannot trim anyway when
#: the trail grew: the checkpoint is chained to the newest event and the document naming it
#: is signed (the key never reaches redis), both made here, from that read. Without the
#: reseal no trim ever lands (0 of 18: 548d9807; RESEALS = 0 here: 0 of 60): this count
#: in TRIES holds that apart from a busy machine's share (~1 in 4: ~15 expected in 60).
LANDED, TRIES = 3, 60


async def test_a_trim_lands_while_appends_run_back_to_back(
        tmp_path: Path, backends: Any, redis_server: Any) -> None:
    p = await backends(echo_app("v1"))
    state = _state(tmp_path, redis_server)
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    other = write_config(tmp_path, two_versions(p, p), state=state, name="b.yaml")
    async with running_gateway(cfg) as g, running_gateway(other) as h:
        sync = g.gw.sync
        await _fill(g, 150)
        stop = asyncio.Event()
        appended = [0]

        async def appends(gw: Any, who: str) -> None:  # (one instance's writes, in turn)
            while not stop.is_set():
                try:
                    await gw.gw.sync.append_audit(AuditDraft(
                        actor=who, action="kill", target={"route": "iris"}, reason="load"))
                    appended[0] += 1
                except StoreConflict:  # (its 5 tries lost to the other's appends, the
                    pass  # trims: said to its caller; not this test's subject)

        tasks = [asyncio.create_task(appends(gw, w)) for gw, w in ((g, "ann"), (h, "bob"))]
        tries = trims = 0
        try:
            # (a look every 50 ms, ~15 events apart, until 50 appends and 15 looks have run
            # and LANDED trims have landed, or TRIES looks; not for 1.5 s: on a loaded
            # machine 1.5 s held 38 appends, "not really run")
            until = time.monotonic() + 20
            while (appended[0] <= 50 or tries < 15 or trims < LANDED) \
                    and tries < TRIES and time.monotonic() < until:
                tries += 1
                try:
                    _, ck = await sync.retention.trim_once()
                    trims += ck is not None
                except StoreConflict:
                    pass
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert appended[0] > 50, appended  # (the appends really ran meanwhile)
        # (before: ~1 in 25 landed, the rest voided by an append between read and trim.
        # Trims keep landing: retention's promise, a look's own retries (CONFLICT_RETRIES)
        # and its next interval doing the rest; not a share of the tries: see LANDED)
        assert trims >= LANDED, (trims, tries, appended)
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, (res.stdout, res.stderr)
