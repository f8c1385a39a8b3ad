"""A manual trim (`POST /v1/audit/trim`) that loses the store after some of its batches
says what it removed: its first checkpoints stand (each batch is one atomic step), so the
answer is not "the state store cannot be reached, nothing was changed". Found by review
(revadmin7): the store's error escaped after the first batches and was answered as a
503 that said nothing had changed, while events were gone (their checkpoint recorded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_audit import H
from tests.test_audit_retention import _fill, _state, _trim_batches_of_ten

pytestmark = pytest.mark.timeout(30)


async def test_a_manual_trim_cut_off_by_the_store_says_what_it_removed(
        tmp_path: Path, backends, session, redis_server, monkeypatch: pytest.MonkeyPatch) -> None:
    _trim_batches_of_ten(monkeypatch)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis_server))
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
        retention = g.gw.sync.retention
        real = retention.trim_once
        calls: list[Any] = []

        async def first_then_down(*args: Any, **kw: Any) -> Any:
            if calls:  # (the store goes away between the first batch and the second)
                redis_server.freeze()
            calls.append(1)
            return await real(*args, **kw)

        monkeypatch.setattr(retention, "trim_once", first_then_down)
        try:
            async with session.post(g.admin + "/v1/audit/trim", json={"reason": "cut"},
                                    headers=H) as r:
                status, body = r.status, await r.json()
        finally:
            redis_server.thaw()
        assert status == 200, body
        assert body["removed"] == 10 and len(body["checkpoints"]) == 1, body
        assert "stopped before the bounds" in body["why"] and "try again" in body["why"]
