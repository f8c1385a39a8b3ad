"""What an idle kept-alive connection holds of its last request: never an over-long target
or Host (the proxy's caches keep none longer than CACHED_TARGET, and neither may the
connection's own last ones, `Connection.last_target`, `last_host`, nor its x-forwarded-*
lines). Found by review (revproto8): a client's idle connections, each after one request
with an 8 KiB target and a long Host, held ~29 KiB each at fa3173f5 (~5 KiB before the
connection remembered its last target): 20,000 of them (server.max_connections) ~0.6 GB
a worker. Routing after such a request is unchanged (the request after it is its own)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.dataplane.outgoing import CACHED_TARGET
from tests.backends import echo_app
from tests.conftest import running_gateway, write_config
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(30)


async def test_an_idle_connection_holds_no_over_long_target_or_host(tmp_path: Path,
                                                                    backends) -> None:
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, "- name: r\n  match: {path_prefix: /r}\n  stable: v1\n"
                       f"  versions:\n    - {{name: v1, url: 'http://127.0.0.1:{port}', "
                       "weight: 100}\n")
    long_target = b"/r/" + b"a" * 7000 + b"?q=" + b"b" * 1000
    long_host = b".".join(b"%c" % (97 + i % 26) * 60 for i in range(120)) + b".example"
    assert len(long_host) > CACHED_TARGET
    asks = [(b"/r/short", b"a.example"), (long_target, long_host),
            (b"/r/short", b"a.example"), (long_target, b"a.example"),
            (b"/r/short", long_host)]
    async with running_gateway(cfg) as g:
        listener = g.gw._listener
        assert listener is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            for target, host in asks:
                writer.write(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, host))
                status, _, body = await read_answer(reader)
                assert status == 200, body[:300]
                echoed = json.loads(body)  # (each forwarded as its own)
                assert echoed["path"].encode() == target
                fields = {k.lower(): v for k, v in echoed["headers"]}
                assert fields["x-forwarded-host"].encode() == host
                (conn,) = listener.connections
                held = {"last_target": conn.last_target, "last_split": conn.last_split[1],
                        "last_host": conn.last_host, "fwd_host": conn.fwd_host,
                        "fwd_lines": conn.fwd_lines}
                too_long = {k: len(v) for k, v in held.items() if v is not None and len(v)
                            > CACHED_TARGET + (200 if k == "fwd_lines" else 0)}
                assert not too_long, f"the idle connection holds {too_long} (bytes)"
        finally:
            writer.close()
            await writer.wait_closed()
