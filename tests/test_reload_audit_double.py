"""The "double-write window" made real (found by revreload): an instance whose reload's event
landed but whose claim never came to name it (cut off from the store, or killed, between its
commit and the claim's update) left the change recorded twice: its sibling making the same
change waited 20 x command_timeout for the claim to name an event, took it over and wrote
its own. The event was on the trail all along, with the change's occurrence in it
(`after.occurrence`, the hash of the claim key): the sibling now looks for it there before
it takes a claim over (occurrence.py `change_in_trail`), and records nothing more.

Real redis-server, two gateways on one file; the first's claim update never answered (its
link to the store gone after the commit: the call hangs, as against a cut-off store)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.configfile import load_config
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.staterig import redis_section
from tests.test_kill_after_routing_reload import _route

pytestmark = pytest.mark.timeout(60)


def reload_events(redis: RedisServer, prefix: str) -> list[dict[str, Any]]:
    """The `config.reload` events in the stream, oldest first (our own raw read)."""
    raw = redis.cmd("XRANGE", f"{prefix}:audit", "-", "+")
    return [ev for line in raw.split("\r\n") if line.startswith("{")
            and (ev := json.loads(line)).get("action") == "config.reload"]


def two_instances(tmp_path: Path, p1: int, p2: int, state: str) -> tuple[list[Path], Path]:
    """Two instances' config files (folders `one`, `two`), both A (v1 100, v2 0), and the
    change B (v1 90, v2 10) to copy over them."""
    a = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}),
                     state=state, name="a.yaml")
    b = write_config(tmp_path, _route("iris", {"v1": (p1, 90), "v2": (p2, 10)}),
                     state=state, name="b.yaml")
    copies = [tmp_path / "one" / "killgate.yaml", tmp_path / "two" / "killgate.yaml"]
    for c in copies:
        c.parent.mkdir()
        c.write_bytes(a.read_bytes())
        c.chmod(0o600)
    return copies, b


def fast_pair(tmp_path: Path, redis: RedisServer, prefix: str, p1: int, p2: int
              ) -> tuple[list[Path], Path]:
    """`two_instances` on a store under `prefix` polled every 100 ms, with a 150 ms command
    timeout (a sibling's wait for a claim is then 3 s)."""
    state = redis_section(redis.url, prefix, poll_interval="100ms",
                          heartbeat_interval="200ms", instance_lease="2s",
                          command_timeout="150ms")
    return two_instances(tmp_path, p1, p2, state)


async def reload_to(g: Any, copy: Path, to: Path) -> None:
    """The instance `g` reloads the config `to` (copied over its file `copy`): the change
    applied and its audit ended."""
    digest = load_config(to).digest
    await asyncio.to_thread(shutil.copyfile, to, copy)  # (its mode kept: 0600)
    g.gw.request_reload()
    await wait_until(lambda: g.gw.watcher is not None
                     and g.gw.watcher.outcome.loaded_digest == digest, 15,
                     what="the change applied (its audit queued)")
    await wait_until(lambda: not g.gw.history.pending(), 20, what="its audit to end")


async def second_records_no_event(g2: Any, copy: Path, b: Path, redis: RedisServer,
                                  prefix: str) -> list[dict[str, Any]]:
    """The second instance makes the change the first recorded (`reload_to` B), and the
    trail holds the first's event alone for it: the events of that change, returned."""
    await reload_to(g2, copy, b)
    db = load_config(b).digest
    events = [e for e in reload_events(redis, prefix) if e["after"]["digest"] == db]
    assert [e["source"] for e in events] == ["one"], events
    return events


async def test_an_event_whose_claim_never_named_it_is_not_written_again(
        tmp_path: Path, backends: Any, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    copies, b = fast_pair(tmp_path, redis_server, "kgdouble", p1, p2)
    never = asyncio.Event()  # (set on the way out: the hung call ends)
    async with running_gateway(copies[0], "one") as g1, \
            running_gateway(copies[1], "two") as g2:
        assert g1.gw.history.token == g2.gw.history.token
        store = g1.gw.sync.store
        real_take = store.idem_take

        async def take(key: str, mine: dict[str, Any], record: dict[str, Any],
                       ttl: float) -> bool:
            if "event" in record:  # (the claim naming the event just written: never sent)
                await never.wait()
            return await real_take(key, mine, record, ttl)

        monkeypatch.setattr(store, "idem_take", take)
        try:
            copies[0].write_bytes(b.read_bytes())
            g1.gw.request_reload()
            await wait_until(lambda: len(reload_events(redis_server, "kgdouble")) == 1, 15,
                             what="the first instance's event")
            # the sibling makes the same change: the claim names no event, past its wait
            await second_records_no_event(g2, copies[1], b, redis_server, "kgdouble")
        finally:
            never.set()
