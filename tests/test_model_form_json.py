"""A JSON object sent with a form's Content-Type: `curl -d '{"model": ...}'` sends
`application/x-www-form-urlencoded`, and Ollama's handlers (gin's `ShouldBindJSON`) read the
body as JSON whatever its Content-Type, as Go's json.Decoder reads a multipart body's
preamble when it is a JSON object. Found by hostile review (revplane): the gateway read such
a body as a form with no `model` field, so with route `chat-a` (match.model gpt-a) killed the
catch-all served the killed model. Refused (400) now, with the Content-Type to send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import running_gateway, write_config
from tests.rawhttp import exchange
from tests.test_model_key_case import H, _routes, go_like

pytestmark = pytest.mark.timeout(30)

_FORM = b"application/x-www-form-urlencoded"
_MULTI = b"multipart/form-data; boundary=XyZ"
_PART = b'--XyZ\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--XyZ--\r\n'


@pytest.mark.parametrize(("ctype", "body"), [
    (_FORM, b'{"model":"gpt-a","messages":[]}'),                  # curl -d, compact JSON
    (_FORM, b'{"model":"gpt-a","prompt":"x=1&y=2"}'),
    (_MULTI, b'{"model":"gpt-a"}\r\n' + _PART),                  # JSON as the preamble
], ids=["urlencoded", "urlencoded-with-equals", "multipart-preamble"])
async def test_a_killed_model_is_not_served_through_json_sent_as_a_form(
        tmp_path: Path, backends, session: ClientSession, ctype: bytes, body: bytes) -> None:
    seen: list[str] = []
    pa = await backends(go_like("a", seen))
    po = await backends(go_like("other", seen))
    cfg = write_config(tmp_path, _routes(pa, po))
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=H, json={
                "scope": "route", "route": "chat-a", "reason": "bad model"}) as r:
            assert r.status == 200, await r.text()
        port = int(g.url.rsplit(":", 1)[1])
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (ctype, len(body)))
        status, headers, answer = await exchange(port, head + body)
        assert seen == [], (
            f"the killed model gpt-a was served by route {headers.get('x-killgate-route')!r}: "
            f"{status} {answer[:200]!r}")
        assert status == 400, (status, answer)
        message = json.loads(answer)["error"]["message"]
        assert "Content-Type: application/json" in message, message


async def test_a_form_that_is_no_json_object_still_routes(
        tmp_path: Path, backends, session: ClientSession) -> None:
    seen: list[str] = []
    pa = await backends(go_like("a", seen))
    po = await backends(go_like("other", seen))
    cfg = write_config(tmp_path, _routes(pa, po))
    async with running_gateway(cfg) as g, \
            session.post(g.url + "/v1/x", data={"model": "gpt-a", "q": "{x}"}) as r:
        # (routed by its form's `model`; the backend reads no JSON in it: a 400 of its own)
        assert (r.status, r.headers["x-killgate-route"], seen) == (400, "chat-a", ["a"])
