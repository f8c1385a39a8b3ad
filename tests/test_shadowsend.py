"""dataplane/shadowsend.py without sockets: the kind a copy that got no answer is counted
under (`failure`, a fixed set: a metric label). Sending itself runs against real backends in
test_shadow.py."""

from __future__ import annotations

import pytest

from gateway.dataplane.shadowsend import TooLarge, failure
from gateway.errors import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamOverflow,
    UpstreamProtocolError,
    UpstreamQueueTimeout,
    UpstreamStale,
    UpstreamTimeout,
)


@pytest.mark.parametrize(("exc", "kind"), [
    (TooLarge(), "answer_too_large"),
    (UpstreamTimeout("total"), "timeout"),
    (UpstreamTimeout("connect", delivered=False), "timeout"),  # before the connect check
    (UpstreamOverflow(), "overflow"),
    (UpstreamQueueTimeout(), "overflow"),
    (UpstreamConnectError(), "connect"),
    (UpstreamClosed(), "reset"),
    (UpstreamStale(), "reset"),
    (UpstreamProtocolError(), "malformed"),
    (UpstreamError(), "error"),
    (ValueError("x"), "error"),
])
def test_the_kind_of_a_failed_copy(exc: BaseException, kind: str) -> None:
    assert failure(exc) == kind
