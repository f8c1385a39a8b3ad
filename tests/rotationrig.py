"""A config for one instance of a key rotation's steps: its state section signing with the
key one environment variable holds and, at step 2, verifying with the previous key's too
(README "Key rotation"); and the two keys, their variables and one test's rotation set-up
(`rotation`). Shared by the rotation tests (tests/test_rotation_*.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from aiohttp import web

from gateway.state.signing import Key
from tests.backends import echo_app
from tests.conftest import STATE_KEY, STATE_KEY_ENV, RedisServer, two_versions, write_config
from tests.staterig import redis_state

__all__ = ["A_ENV", "B_ENV", "KEY_B", "Rotation", "keyed_config", "keys_config", "rotation"]


def keyed_config(tmp: Path, redis: RedisServer, port: int, name: str, signing: str,
                 previous: str | None = None, folder: Path | None = None) -> Path:
    """Instance `name`'s config (its snapshot `name`'s) in `folder` (default tmp/name),
    made here: one route, v1 all of its traffic, signing with the key in env `signing` and
    verifying with the one in env `previous` too when given."""
    keys = f"signing_key_env: {signing}"
    if previous is not None:
        keys += f"\n  previous_signing_key_env: {previous}"
    return keys_config(tmp, redis, port, name, keys, folder)


def keys_config(tmp: Path, redis: RedisServer, port: int, name: str, keys: str,
                folder: Path | None = None) -> Path:
    """As keyed_config, the state section's key lines given whole (`keys`)."""
    folder = folder or tmp / name
    folder.mkdir()
    state = redis_state(redis, tmp, name).replace(
        "signing_key_env: KILLGATE_TEST_STATE_KEY", keys)
    return write_config(folder, two_versions(port, port, 100, 0), state=state)


#: the second key of the rotation tests (the first is the suite's STATE_KEY), the
#: environment variable each is read from
KEY_B = "b" * 64
A_ENV, B_ENV = STATE_KEY_ENV, "KG_KEY_B"


@dataclass(frozen=True)
class Rotation:
    """One test's rotation from key A (STATE_KEY, in A_ENV) to key B (KEY_B, in B_ENV) on
    `redis`, each instance's config routing v1 to the echo backend on `port`."""

    tmp: Path
    redis: RedisServer
    port: int
    a: ClassVar[Key] = Key.of(STATE_KEY.encode())
    b: ClassVar[Key] = Key.of(KEY_B.encode())

    def cfg(self, name: str, signing: str, previous: str | None = None,
            folder: Path | None = None) -> Path:
        """keyed_config for this rotation's store and backend."""
        return keyed_config(self.tmp, self.redis, self.port, name, signing, previous, folder)


async def rotation(tmp: Path, redis: RedisServer,
                   backends: Callable[[web.Application], Awaitable[int]],
                   monkeypatch: pytest.MonkeyPatch) -> Rotation:
    """A Rotation, key B set in B_ENV for the test (the `backends` and `monkeypatch` fixtures
    passed in: the echo backend and the variable end with the test)."""
    monkeypatch.setenv(B_ENV, KEY_B)
    return Rotation(tmp, redis, await backends(echo_app("v1")))
