"""An `events.webhooks[].url` with a query string (the receiver's token in it, as Google
Chat's and Azure Functions' webhook URLs have) loads, and the events reach it with the
query as written; neither `/v1/config` nor the log shows the query. It was refused as
"must be an http:// or https:// URL with a host, optionally a path", which it is, while
`analysis.webhook_url` took the same URL. Found by the new-user review (revnewuser2).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp import web

from gateway.log import _JsonFormatter, _TextFormatter
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_events import ADMIN, HOOK_SECRET, _call, verify

pytestmark = pytest.mark.timeout(30)
TOKEN = "tok-5ecret-in-the-query"


@pytest.fixture(autouse=True)
def _hook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILLGATE_TEST_HOOK_SECRET", HOOK_SECRET)


async def test_a_webhook_url_with_a_query_gets_the_events(
        tmp_path: Path, backends, session, caplog: pytest.LogCaptureFixture) -> None:
    got: list[tuple[str, dict[str, str], bytes]] = []

    async def hook(req: web.Request) -> web.Response:
        got.append((req.query_string, dict(req.headers), await req.read()))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/spaces/AAA/messages", hook)
    ph = await backends(app)
    p = await backends(echo_app("v1"))
    url = f"http://127.0.0.1:{ph}/v1/spaces/AAA/messages?key=k1&token={TOKEN}"
    cfg = write_config(tmp_path, two_versions(p, p), extra=(
        f"events:\n  webhooks:\n    - {{url: '{url}', secret_env: KILLGATE_TEST_HOOK_SECRET}}\n"))
    with caplog.at_level(logging.DEBUG):
        async with running_gateway(cfg) as g:
            await _call(session, "POST", g.admin + "/v1/kill",
                        {"scope": "route", "route": "iris", "reason": "x"})
            await wait_until(lambda: got, 10, what="the delivery")
            async with session.get(g.admin + "/v1/config", headers=ADMIN) as r:
                assert r.status == 200
                shown = await r.text()
    query, headers, body = got[0]
    assert query == f"key=k1&token={TOKEN}"
    assert verify({k.lower(): v for k, v in headers.items()}, body)
    assert TOKEN not in shown, shown
    # (each line as the gateway writes it: JSON and text)
    lines = [f.format(r) for r in caplog.records
             for f in (_JsonFormatter(), _TextFormatter())]
    assert any("event_delivered" in line for line in lines)
    assert not [line for line in lines if TOKEN in line], lines
