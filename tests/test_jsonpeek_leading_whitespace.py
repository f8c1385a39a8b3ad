"""A body in UTF-16/32, or UTF-8 after a BOM, whose object starts past its first bytes:
refused, however long the whitespace before the object (within the peek window).

The first fix decoded only `body[:64]`: leading whitespace past those bytes hid the "{",
and the body was routed as having no `model` while Python's `json.loads(bytes)`
(Starlette's `Request.json()`) reads it (RELIABILITY row 57). From a second hostile review.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from gateway.dataplane.jsonpeek import Unreadable, find_model
from tests.conftest import running_gateway, write_config
from tests.rawhttp import exchange
from tests.test_model_body_encodings import starlette_like

pytestmark = pytest.mark.timeout(30)

_OBJ = {"model": "gpt-a", "messages": [{"role": "user", "content": "hi"}]}
BODIES = [
    pytest.param((" " * 40 + json.dumps(_OBJ)).encode("utf-16-le"), id="utf16le-40-spaces"),
    pytest.param((" " * 20 + json.dumps(_OBJ)).encode("utf-32-be"), id="utf32be-20-spaces"),
    pytest.param(b"\xef\xbb\xbf" + b" " * 70 + json.dumps(_OBJ).encode(), id="utf8-bom-70-spaces"),
    pytest.param(b"\xef\xbb\xbf" + b"\n" * 70 + json.dumps(_OBJ).encode(), id="utf8-bom-70-newlines"),
]


@pytest.mark.parametrize("body", BODIES)
def test_find_model_refuses_a_body_python_reads_as_json_in_another_encoding(body: bytes) -> None:
    assert json.loads(body)["model"] == "gpt-a"  # what a Python backend reads
    try:
        found = find_model(body, True)
    except Unreadable:
        return
    assert found is not None and found.value == "gpt-a", (
        f"routed with model {None if found is None else found.value!r}; json.loads reads 'gpt-a'")


@pytest.mark.parametrize("body", BODIES)
async def test_a_body_with_whitespace_past_64_bytes_is_not_routed_elsewhere(
        tmp_path: Path, backends, body: bytes) -> None:
    pa, po = await backends(starlette_like("a")), await backends(starlette_like("other"))
    routes = textwrap.dedent(f"""\
        - name: chat-a
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{pa}", weight: 100}}
        - name: other
          match: {{path_prefix: /v1}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{po}", weight: 100}}
        """)
    cfg = write_config(tmp_path, routes, extra="server: {model_peek_bytes: 1024}\n")
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        status, headers, answer = await exchange(port, head + body)
    if status == 400:
        return
    got = json.loads(answer)
    assert got["model"] == "gpt-a"
    assert headers.get("x-killgate-route") == "chat-a", (
        f"a body the backend reads as model 'gpt-a' was routed to "
        f"{headers.get('x-killgate-route')!r} (backend {got['backend']!r})")
