"""A multipart body routed by its `model` that never closes past the peek window (no close
delimiter, or it ends inside a part head): Starlette and aiohttp refuse it, Werkzeug reads
it as an empty form, so what its backend reads is not what routing read. The streaming
scanner could not judge the end, those bytes were gone already: the sender now holds back
the last bytes (len("\\r\\n--" + boundary + "--\\r\\n")) until the body ends and the form
is known closed, else 400 `model_body` and the backend connection closed. Real gateway,
a real Werkzeug form reader behind it, the body sent in pieces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import running_gateway, write_config
from tests.test_form_model_kill import routes
from tests.test_form_second_model import _send, audio, werkzeug_app
from tests.test_formpeek import field, mp

pytestmark = pytest.mark.timeout(30)

CLOSED = mp(field(b'"model"', b"gpt-a"), audio(128 << 10))  # (past SMALL_BODY: it streams)
OPEN = CLOSED[:-len(b"\r\n--XyZ--\r\n")]
IN_HEAD = CLOSED[:-len(b"--\r\n")] + b"\r\nContent-Disposition: form-da"


@pytest.mark.parametrize(("body", "where"), [
    (OPEN, "before its close delimiter"), (IN_HEAD, "inside a part's head")])
async def test_a_form_that_never_closes_is_refused_and_never_read(
        tmp_path: Path, backends, body: bytes, where: str) -> None:  # type: ignore[no-untyped-def]
    seen: list[str | None] = []
    pa, po = await backends(werkzeug_app(seen)), await backends(werkzeug_app(seen))
    cfg = write_config(tmp_path, routes(pa, po), extra="server: {model_peek_bytes: 4096}\n")
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        # in pieces: the first while routing, the rest once the backend reads, the last
        # bytes alone (each cut inside what the sender holds back)
        status, answer = await _send(port, [body[:5000], body[5000:-20], body[-20:-3],
                                            body[-3:]])
        assert status == 400, (status, answer, seen)
        msg = json.loads(answer)["error"]["message"]
        assert where in msg, msg
        assert seen == []  # (before: Werkzeug read an empty form, model None)
        # the same form closed, its close delimiter cut across pieces, goes whole
        status, answer = await _send(port, [CLOSED[:5000], CLOSED[5000:-9], CLOSED[-9:-4],
                                            CLOSED[-4:]])
        assert status == 200 and json.loads(answer)["model"] == "gpt-a", answer
    assert seen == ["gpt-a"]
