"""The state rig the tests share: a gateway's `state:` section on a real redis-server.

`redis_section`: the redis backend at a server's URL, under the test's own key prefix,
signed with the tests' state key (STATE_KEY_ENV, which conftest's autouse `_secret_env`
sets for every test: no test sets it again), with the settings a test names, so that what
differs between tests (prefix, snapshot, timings) is all a call says. `redis_state`: the
kill-switch tests' section, with the lease and staleness a slow poll needs worked out.
`sync_config`: a section and one route parsed as `killgate serve` loads them, for tests of
the state sync (make_sync) with no gateway around it. `state_keys`, `store_on`: a bare
RedisStore signed with the tests' key (or a rotation step's keys); `connected`: one with a
rotation step's keys opened and closed, what it recorded as it connected; `two_stores`:
two of them open on one redis, what the first refuses (and hears pushed) recorded, for
tests of heartbeats and acks.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config_types import parse_duration
from gateway.configfile import LoadedConfig, parse_config_text
from tests.conftest import STATE_KEY, STATE_KEY_ENV, RedisServer

if TYPE_CHECKING:
    from gateway.state.redis import RedisStore
    from gateway.state.signing import Key, Keyring

__all__ = ["IRIS_ROUTE", "StorePair", "connected", "redis_section", "redis_state",
           "state_keys", "store_on", "sync_config", "two_stores"]

#: one route, its one version at a port nobody serves: the sync tests route nothing
IRIS_ROUTE = """routes:
  - name: iris
    match: {path_prefix: /v2/models/iris}
    stable: v1
    versions:
      - {name: v1, url: "http://127.0.0.1:1", weight: 100}
"""


def redis_section(url: str, prefix: str, snapshot: Path | str | None = None,
                  **settings: str) -> str:
    """`state:` on the redis at `url` under `prefix`, signed with the tests' key;
    `snapshot`: its snapshot_path; `settings`: more lines (poll_interval="100ms", ...)."""
    lines = ["state:", "  backend: redis", f"  url: {url}", f"  prefix: {prefix}",
             f"  signing_key_env: {STATE_KEY_ENV}"]
    if snapshot is not None:
        lines.append(f"  snapshot_path: {snapshot}")
    lines += [f"  {name}: {value}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def redis_state(redis: RedisServer, tmp: Path, name: str = "a", extra: str = "",
                command_timeout: str = "300ms", poll: str = "100ms") -> str:
    """Instance `name`'s section (prefix kgtest, its own snapshot), polling every `poll`:
    60s where a test must tell a push's effect from the next poll's (the lease and
    max_staleness then follow it: at least twice a poll, config_checks.py)."""
    slow = parse_duration(poll) > 1.0
    lease = f"{2 * parse_duration(poll):g}s" if slow else "2s"
    stale = ({"max_staleness": f"{2 * parse_duration(poll):g}s"}
             if slow and "max_staleness" not in extra else {})
    return redis_section(redis.url, "kgtest", f"{tmp}/snapshot-{name}.json",
                         poll_interval=poll, heartbeat_interval="200ms",
                         instance_lease=lease, **stale,
                         command_timeout=command_timeout) + extra


def sync_config(state: str, path: Path) -> LoadedConfig:
    """`state` (a `redis_section`) and IRIS_ROUTE, loaded as if read from `path`."""
    return LoadedConfig(parse_config_text(state + IRIS_ROUTE), "sha256:test", path)


def state_keys() -> Keyring:
    """The tests' state key (STATE_KEY) as a store's keyring."""
    from gateway.state.signing import Key, Keyring

    return Keyring(Key.of(STATE_KEY.encode()))


def store_on(redis: RedisServer, prefix: str, timeout: float = 1.0, *,
             current: Key | None = None, previous: Key | None = None,
             **kw: Any) -> RedisStore:
    """A RedisStore on `redis` under `prefix`, signed with the tests' key (not opened), or
    with `current` (verifying with `previous` too: an instance at a key rotation's step);
    `kw`: the store's other arguments (on_unverified, audit_keys, ...)."""
    from gateway.state.redis import RedisStore
    from gateway.state.signing import Keyring

    keys = state_keys() if current is None else Keyring(current, previous, prefix)
    return RedisStore(redis.url, prefix, timeout, keys=keys, **kw)


async def connected(redis: RedisServer, current: Key, previous: Key | None = None,
                    prefix: str = "kgtest") -> RedisStore:
    """A store signing with `current` (and verifying with `previous`) opened and closed
    again: what an instance holding those keys records as it connects (retiredkeys.py);
    the store says what it found (`.keys.retired`, `.step2`)."""
    store = store_on(redis, prefix, current=current, previous=previous)
    await store.open()
    await store.close()
    return store


@dataclass
class StorePair:
    """`a` (the one judging) and `b` (the other instance) on one redis; what `a` refused,
    as "kind: why", and what it heard pushed (with `listen`)."""

    a: RedisStore
    b: RedisStore
    refused: list[str] = field(default_factory=list)
    got: list[object] = field(default_factory=list)


@contextlib.asynccontextmanager
async def two_stores(redis: RedisServer, prefix: str,
                     listen: bool = False) -> AsyncIterator[StorePair]:
    """Two stores under `prefix`, open (closed after); `listen`: `a` hears pushes."""
    pair = StorePair(store_on(redis, prefix), store_on(redis, prefix))
    if listen:
        pair.a.listen(pair.got.append)
    pair.a.on_unverified = (  # type: ignore[method-assign]
        lambda kind, why, which, cause="other": pair.refused.append(f"{kind}: {why}"))
    await pair.a.open()
    try:
        await pair.b.open()
        yield pair
    finally:
        await pair.a.close()
        await pair.b.close()
