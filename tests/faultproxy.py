"""A TCP fault proxy for tests (RELIABILITY §5): loopback only, switchable at runtime."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["Forwarder", "redis_state_via"]


def redis_state_via(fwd: Forwarder, tmp: Path, prefix: str, **opts: str) -> str:
    """A `state:` section for a redis store reached through `fwd`."""
    lines = [f"  {k}: {v}\n" for k, v in {"poll_interval": "100ms", **opts}.items()]
    return (f"state:\n  backend: redis\n  url: redis://127.0.0.1:{fwd.port}/0\n"
            f"  prefix: {prefix}\n  snapshot_path: {tmp}/snap.json\n"
            f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n" + "".join(lines))


class Link:
    """One forwarded connection: what its client sent first, a mute switch that
    silently drops what the target sends back (a half-open connection), and a delay of
    its own for what its client sends (`latency`: the forwarder's, for every link)."""

    def __init__(self) -> None:
        self.head = b""
        self.muted = False
        self.latency = 0.0
        self.client_port = 0  # (the client's end: which of its connections this is)
        self.ends: tuple[asyncio.StreamWriter, ...] = ()  # (both sides: closed by cut())


class Forwarder:
    """127.0.0.1:<port> → 127.0.0.1:<target>. `point(target)` drops every connection (a
    failover, seen from the client), those still connecting too; `point(None)` cuts the
    link: every connection is dropped as it comes (a port merely free now may be listened
    on later by a sibling worker's server); `latency` delays each chunk sent to the
    target; `links` lists the connections, oldest first; `refuse(client_port)`, when set,
    drops each connection it says so of as it comes, and `cut(refuse)` those open (one
    client cut off, say one worker of a `--workers N` group, the others not)."""

    def __init__(self, target: int | None) -> None:
        self.target = target
        self.turn = 0  # (one more at each point(): a connection made across one is dropped)
        self.latency = 0.0
        self.links: list[Link] = []
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.refuse: Callable[[int], bool] | None = None
        # (its own thread and loop: a test's loop, loaded, delayed every relayed byte by
        # three of its turns, and a connection still relayed when that loop closed was left
        # unclosed; every writer it made, for close())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._made: set[asyncio.StreamWriter] = set()
        self._closing = False  # (a connection accepted as close() runs is dropped)

    async def start(self) -> None:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(started),),
                                        name=f"forwarder-{self.target}", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(started)

    async def _main(self, started: concurrent.futures.Future[None]) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        except BaseException as exc:
            started.set_exception(exc)
            raise
        self.port = self.server.sockets[0].getsockname()[1]
        started.set_result(None)
        await self._stop.wait()
        # (every connection dropped, those accepted meanwhile as they are handed over,
        # and only then the listener closed: a connection accepted in the loop turn that
        # closed it got a transport that asyncio never closed (Server._attach asserts the
        # server is open: the new transport is dropped, its socket still set), and the
        # test session ended with "unclosed transport" ResourceWarnings)
        self._closing = True
        self._drop()
        loop, me = asyncio.get_running_loop(), asyncio.current_task()
        until = loop.time() + 10
        while True:
            for w in self._made:
                # (aborted: closed, a link holding bytes for a target that reads nothing (a
                # SIGSTOPped redis) waited to flush them for ever, its relay with it)
                w.transport.abort()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            if not rest or loop.time() >= until:
                break
            await asyncio.wait(rest, timeout=0.05)
        self.server.close()
        await self.server.wait_closed()

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Runs `fn` on the forwarder's loop, and returns once it has."""
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            fn()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def call() -> None:
            try:
                fn()
                done.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

        loop.call_soon_threadsafe(call)
        done.result(10)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._made.add(w)
        await self._relay(r, w)

    async def _relay(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        turn, target = self.turn, self.target
        peer = (w.get_extra_info("peername") or ("", 0))[1]
        if self._closing or target is None or await self._refused(peer):
            w.close()
            return
        self.pipes.add(w)  # (dropped by a point() made while it connects)
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", target)
            self._made.add(uw)
        except OSError:
            self.pipes.discard(w)
            w.close()
            return
        if self._closing or turn != self.turn or await self._refused(peer):
            # (re-pointed meanwhile, or its client cut: this one went to the old target, and
            # lived on past the cut: a drill's cut-off instance kept reaching the store)
            self.pipes.discard(w)
            uw.close()
            w.close()
            return
        self.pipes |= {w, uw}
        link = Link()
        link.client_port = peer
        link.ends = (w, uw)
        self.links.append(link)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       delayed: bool) -> None:
            # Each chunk is held `latency` from its arrival (a delay line, not a queue
            # that adds up): what toxiproxy's latency toxic does.
            line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            loop = asyncio.get_running_loop()

            async def out() -> None:
                while True:
                    due, data = await line.get()
                    if not data:
                        break
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    if delayed and len(link.head) < 512:
                        link.head += data
                    if not delayed and link.muted:
                        continue
                    dst.write(data)
                    await dst.drain()

            sender = asyncio.ensure_future(out())
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    line.put_nowait((loop.time() + (max(self.latency, link.latency) if delayed
                                                     else 0.0), data))
            line.put_nowait((0.0, b""))
            with contextlib.suppress(OSError):
                await sender
            dst.close()

        await asyncio.gather(pump(r, uw, True), pump(ur, w, False))
        self.pipes -= {w, uw}

    def point(self, target: int | None) -> None:
        def repoint() -> None:
            self.target = target
            self._drop()

        self._on_loop(repoint)

    def _drop(self) -> None:
        self.turn += 1
        for w in list(self.pipes):
            w.close()

    async def _refused(self, peer: int) -> bool:
        """Whether `refuse` names the client at `peer`, asked on a thread: it may read /proc
        (test_drill_*'s _owner: ~5 ms a read, far more on a loaded machine), and asked on
        this loop it held up every other link's bytes meanwhile."""
        refuse = self.refuse
        if refuse is None:
            return False
        return await asyncio.get_running_loop().run_in_executor(None, refuse, peer)

    def cut(self, refuse: Callable[[int], bool]) -> None:
        """From now on refuse the clients `refuse` names (by their port), and drop their
        open connections. (`refuse` is asked here, on the caller's thread, of open links
        only: asked on the forwarder's loop of every link a test ever made, a /proc read
        each, it held up the links left alone for longer than a gateway's command timeout:
        test_drill_slow_worker's healthy worker lost its store link, fell behind, and was
        named late.)"""
        self.refuse = refuse
        seen = 0
        while seen < len(self.links):  # (and those listed meanwhile)
            batch, seen = self.links[seen:], len(self.links)
            doomed = [w for link in batch
                      if link.ends and not all(w.is_closing() for w in link.ends)
                      and refuse(link.client_port) for w in link.ends]

            def drop(doomed: list[asyncio.StreamWriter] = doomed) -> None:
                for w in doomed:
                    w.close()

            self._on_loop(drop)

    async def close(self) -> None:
        """Every connection dropped, the listener closed, the thread ended."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join, 30)
