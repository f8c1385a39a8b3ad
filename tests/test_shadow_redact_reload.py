"""Records kept before a reload that adds redaction are not shown after it. (Hostile shadow
review, third pass: `disagreements.redact` is not among the settings that start the counts
afresh, so the ring of kept disagreements, each with the request and both answers, stayed:
an operator who found customers' data in `killgate shadow report` and added a redact path
went on seeing, and publishing to the store, the same unredacted bodies until `keep` newer
disagreements had pushed them out, for good on a shadow that gets no more copies.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import fixed_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_shadow import report, route, send_all, settled

pytestmark = pytest.mark.timeout(60)


async def test_records_kept_under_other_redaction_leave_the_report_at_a_reload(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1 = await backends(fixed_app(b'{"label": "cat"}'))
    p2 = await backends(fixed_app(b'{"label": "dog"}'))
    plain = "{version: v2, sample: 1.0}"
    cfg = write_config(tmp_path, route(p1, p2, plain, protocol="http", prefix="/v1"))
    secret = json.dumps({"card": "4111111111111111", "q": 1}).encode()
    async with running_gateway(cfg) as gw:
        await send_all(session, gw.url + "/v1/x", [secret] * 3)
        rep = await settled(session, gw.admin, 3)
        assert "4111111111111111" in json.dumps(rep["disagreements"])  # (the test's premise)
        digest = gw.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, route(
            p1, p2, "{version: v2, sample: 1.0, disagreements: {redact: [card]}}",
            protocol="http", prefix="/v1"), name="next.yaml").read_text())
        gw.gw.request_reload()
        await wait_until(lambda: gw.gw.loaded.digest != digest, 10)
        rep = await report(session, gw.admin)
        assert rep["compared"] == 3  # (the counts stay: the comparison did not change)
        assert "4111111111111111" not in json.dumps(rep), rep["disagreements"]
        stored = await gw.gw.sync.store.get_stats("shadow~iris")
        assert "4111111111111111" not in json.dumps(stored)
        # the next disagreement is kept, redacted
        await send_all(session, gw.url + "/v1/x", [secret])
        rep = await settled(session, gw.admin, 4)
        assert rep["disagreements"][0]["request"] == {"card": "[redacted]", "q": 1}
        assert "4111111111111111" not in json.dumps(rep)
