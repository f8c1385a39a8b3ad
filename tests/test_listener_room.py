"""Making room at `server.max_connections` (dataplane/listener.py `Listener.full`), without
sockets: which connections are closed, how many at once, and that a fleet of busy ones
costs one scan per ROOM_RESCAN, not one per refused connection. The same over real
sockets: tests/test_overload.py."""

from __future__ import annotations

import pytest

from gateway.dataplane.listener import ROOM_BATCH, Limits, Listener
from tests.test_protocol import GET, Recorder, answer, connect, feed, until

pytestmark = pytest.mark.timeout(10)


class Conn:
    """A connection as the listener sees it."""

    def __init__(self, spare: float | None) -> None:
        self.key = spare
        self.aborted = False
        self.asked = 0
        self.remote = "127.0.0.1"

    def spare(self) -> float | None:
        self.asked += 1
        return self.key

    def abort(self) -> None:
        self.aborted = True

    def shutdown(self) -> None:
        pass


def _listener(cap: int, conns: list[Conn]) -> tuple[Listener, list[str]]:
    counts: list[str] = []
    lis = Listener(Recorder(), Limits(header_timeout=1, keepalive_timeout=1, body_timeout=1,
                                      send_timeout=1), cap, counts.append)
    lis.connections.update(conns)  # type: ignore[arg-type]
    return lis, counts


def test_below_the_cap_nothing_is_asked() -> None:
    conns = [Conn(1.0) for _ in range(3)]
    lis, counts = _listener(4, conns)
    assert not lis.full()
    assert all(c.asked == 0 for c in conns) and not counts


def test_the_soonest_deadline_makes_room_and_is_not_counted_while_it_leaves() -> None:
    busy, late, soon = Conn(None), Conn(50.0), Conn(5.0)
    lis, counts = _listener(3, [busy, late, soon])
    assert not lis.full()
    assert soon.aborted and not late.aborted and not busy.aborted
    assert counts == ["reclaimed"]
    # the one admitted took that room; the next needs more: the one leaving is not
    # counted, and not asked again
    lis.connections.add(Conn(60.0))  # type: ignore[arg-type]
    assert lis.full() is False and late.aborted and counts == ["reclaimed"] * 2
    assert soon.asked == 2  # (the scan, and again when its turn came to be closed)
    lis.forget(soon)  # type: ignore[arg-type]  # their connection_lost
    lis.forget(late)  # type: ignore[arg-type]
    assert not lis.leaving and len(lis.connections) == 2


def test_a_batch_at_a_time_at_a_large_cap() -> None:
    conns = [Conn(float(i)) for i in range(64 * ROOM_BATCH)]
    lis, counts = _listener(len(conns), conns)
    assert not lis.full()
    assert [c.aborted for c in conns] == [True] * ROOM_BATCH + [False] * (len(conns) - ROOM_BATCH)
    assert counts == ["reclaimed"] * ROOM_BATCH
    # the next ROOM_BATCH - 1 are admitted without a scan
    for _ in range(ROOM_BATCH - 1):
        lis.connections.add(Conn(1e9))  # type: ignore[arg-type]
        assert not lis.full()
    assert all(c.asked == 1 + c.aborted for c in conns)  # (the closed: again at their turn)


def test_every_connection_busy_refuses_and_scans_once_per_rescan() -> None:
    conns = [Conn(None) for _ in range(100)]
    lis, counts = _listener(100, conns)
    assert all(lis.full() for _ in range(50))
    assert all(c.asked == 1 for c in conns) and not counts


async def test_what_a_connection_offers() -> None:
    """`HttpProtocol.spare`: idle or in its head, by its deadline; not with a request in
    progress, nor while lingering (its client may not have read the answer yet)."""
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h)
    assert proto.spare() == proto.deadline  # nothing sent yet
    feed(proto, GET[:10])
    assert proto.spare() == proto.deadline  # a head arriving
    feed(proto, GET[10:])
    assert proto.spare() is None  # a request in progress
    answer(h.seen[0])
    await until(lambda: not proto.queue)
    assert proto.spare() == proto.deadline > proto.loop.time()  # kept alive, idle
    proto.lingering = True
    assert proto.spare() is None
    tr.close()


async def test_pipelined_requests_read_but_not_yet_parsed_are_in_progress() -> None:
    """(hostile review of 11865f9) A read holding many pipelined requests is parsed a slice
    at a time, the rest held as bytes while requests queue; once the queue is answered,
    the held bytes are parsed in a loop turn of their own. Between the two, the connection
    has whole requests its client sent: closing it to make room would lose them."""
    from gateway.dataplane.wire import SLICE

    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h)
    feed(proto, GET * (SLICE // len(GET) + 8))
    assert proto.held
    while proto.queue:  # answered as they are handed over, in this loop turn
        answer(h.seen[-1])
    assert proto.held and proto.spare() is None
    tr.close()


def test_a_flood_of_connects_at_the_cap_pays_little_for_each() -> None:
    """(hostile review of 11865f9) At the cap, with idle connections to close, every
    ROOM_BATCH new connections cost a scan of every connection: at the default cap
    (20,000), ~25 ms of the data plane's loop per 32 connects, so a few thousand connects a
    second (each closed in turn by the next ones) stalled every request. A scan now keeps
    its candidates for the next batches: a connect costs a few `spare` calls, not a scan."""
    cap = 4096
    conns = [Conn(float(i)) for i in range(cap)]
    lis, counts = _listener(cap, conns)
    every = list(conns)
    for i in range(2048):  # a flood: each new one is idle, the latest deadline
        assert not lis.full()
        for c in [c for c in lis.leaving if c.aborted]:  # (their connection_lost)
            lis.forget(c)  # type: ignore[arg-type]
        new = Conn(1e6 + i)
        every.append(new)
        lis.connections.add(new)  # type: ignore[arg-type]
    assert counts == ["reclaimed"] * 2048
    asked = sum(c.asked for c in every)
    assert asked <= 16 * 2048, f"{asked / 2048:.0f} spare() calls per new connection"
