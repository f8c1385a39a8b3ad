"""A re-seed that loses its race must not adopt the document that beat it (tenth review).

One in-process instance, a, holds a kill; the test plays the others with the state key: b,
which missed the kill, re-seeded a flushed store at a's generation (the collision
reseed.py's `_foreign_to` finds), and c writes on b's re-seed. a's re-seed of the union
(merge_restrictive) loses the compare-and-set to c's write, and a reloads the store: c's
document is newer, of b's epoch, without the kill, and does not descend from what a holds.
It must be merged like any such document, never adopted: adopted, the kill was lifted on a
and in the store for good, by no unkill.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.routetable import RouteTable
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_forgery import sealed, stored_doc
from tests.test_killswitch import kill, redis_state, status_of

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def killed_iris(tmp_path: Path, backends, redis_server: RedisServer,
                      session) -> AsyncIterator[tuple[Any, int, dict[str, Any]]]:
    """One gateway on the redis store with route iris killed: the gateway, the kill's
    generation and the stored document."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        gen = int((await kill(session, g.admin, scope="route", route="iris"))["generation"])
        yield g, gen, stored_doc(redis_server)


def missed_it(held: dict[str, Any], gen: int) -> dict[str, Any]:
    """b's re-seed at generation `gen` from what it held: `held` before a's kill at `gen`
    (its lineage and the writes it descends from end before it)."""
    return {**held, "epoch": "b-reseed", "kills": {}, "lineage": {held["epoch"]: gen - 1},
            "writes": [*held["writes"][:-1], f"{gen}:b"]}


async def test_a_reseed_beaten_by_a_write_on_the_colliding_epoch_keeps_the_kill(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    async with killed_iris(tmp_path, backends, redis_server, session) as (g, gen, held):
        b = missed_it(held, gen)
        c = {**b, "generation": gen + 1, "writes": [*b["writes"], f"{gen + 1}:c"]}
        lifted: list[int] = []

        def on_table(_old: RouteTable, new: RouteTable) -> None:
            if "route:iris" not in new.doc.kills:
                lifted.append(new.doc.generation)

        g.gw.holder.listen(on_table)
        store: Any = g.gw.sync.store
        real = store.commit
        raced: list[int] = []

        async def commit(expected: str | None, doc: Any, draft: Any, *a: Any, **kw: Any) -> Any:
            if not raced and draft is not None and draft.action == "state.reseed":
                raced.append(doc.generation)  # c's write lands between a's load and commit
                redis_server.cmd("SET", "kgtest:state", sealed(c, STATE_KEY))
                redis_server.cmd("SET", "kgtest:gen", str(gen + 1))
            return await real(expected, doc, draft, *a, **kw)

        store.commit = commit
        redis_server.cmd("SET", "kgtest:state", sealed(b, STATE_KEY))  # FLUSHALL, b's re-seed
        redis_server.cmd("SET", "kgtest:gen", str(gen))
        redis_server.cmd("PUBLISH", "kgtest:events", sealed(b, STATE_KEY))
        await wait_until(lambda: raced, 5, what="a to re-seed")
        await wait_until(lambda: lifted or int(redis_server.cmd("GET", "kgtest:gen")) > gen + 1,
                         5, what="a's re-seed after the race")
        assert not lifted, f"the kill was lifted on a at generation {lifted}"
        assert "route:iris" in stored_doc(redis_server)["kills"]
        assert await status_of(session, g.url) == (503, "killed")
        assert not lifted, f"the kill was lifted on a at generation {lifted}"


async def test_a_kill_pushed_on_a_colliding_epoch_is_in_force_before_the_next_poll(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """A pushed document that must be merged (`_foreign_to`) waited for the next poll to be
    merged, and the kill it brings waited with it: up to `poll_interval` (here 60 s), where
    before the ninth review such a push was re-read (and adopted) at once. Merged as it
    comes now (a merge backing off, `_may_repair`, still waits for a poll)."""
    p1 = await backends(echo_app("v1"))
    routes = two_versions(p1, p1, 100, 0) + two_versions(p1, p1, 100, 0, name="other",
                                                          prefix="/v2/models/other")
    state = redis_state(redis_server, tmp_path, "a", poll="60s")
    cfg = write_config(tmp_path, routes, state=state)
    async with running_gateway(cfg) as g:
        gen = int((await kill(session, g.admin, scope="route", route="iris"))["generation"])
        held = stored_doc(redis_server)
        flag = {**held["kills"]["route:iris"], "route": "other", "generation": gen + 1}
        b = missed_it(held, gen)
        c = {**b, "generation": gen + 1, "kills": {"route:other": flag},
             "writes": [*b["writes"], f"{gen + 1}:c"]}
        sync: Any = g.gw.sync  # (a's start re-seeded the empty store: that one backs off)
        await wait_until(lambda: time.monotonic() > sync._repair_at, 2, what="no backoff")
        # FLUSHALL, b's re-seed (its push lost on a's cut subscription), c kills `other` on it
        redis_server.cmd("SET", "kgtest:state", sealed(c, STATE_KEY))
        redis_server.cmd("SET", "kgtest:gen", str(gen + 1))
        redis_server.cmd("PUBLISH", "kgtest:events", sealed(c, STATE_KEY))
        await wait_until(lambda: "route:other" in g.gw.holder.doc.kills, 3,
                         what="c's kill in force on a")
        assert "route:iris" in g.gw.holder.doc.kills
        assert "route:other" in stored_doc(redis_server)["kills"]
