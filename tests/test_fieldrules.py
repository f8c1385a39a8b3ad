"""dataplane/fieldrules.py without sockets: the rules both directions share."""

from __future__ import annotations

from gateway.dataplane.fieldrules import connection_tokens


def test_connection_tokens() -> None:
    assert connection_tokens([b"Keep-Alive, X-A ,,x-b", b"close"]) == {
        b"keep-alive", b"x-a", b"x-b", b"close"}
