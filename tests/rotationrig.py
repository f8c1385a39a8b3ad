"""A config for one instance of a key rotation's steps: its state section signing with the
key one environment variable holds and, at step 2, verifying with the previous key's too
(README "Key rotation"). Shared by the rotation tests (tests/test_rotation_*.py)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RedisServer, two_versions, write_config
from tests.staterig import redis_state

__all__ = ["keyed_config", "keys_config"]


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
