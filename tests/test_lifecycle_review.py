"""`killgate serve` stopped at awkward moments: before start-up finished, mid-request.

Real processes (tests/conftest.py's `gateway_procs`), real backends and sockets.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import STATE_KEY_ENV, free_port, two_versions, wait_until_sync, write_config


async def _to_thread(fn, *args):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_sigterm_while_waiting_for_the_store_at_start_stops_at_once(
        tmp_path: Path, gateway_procs, workers: int) -> None:
    """A SIGTERM (a rolling update, a crash-looping pod) that comes while the instance
    still waits for Redis at start (up to `state.start_timeout`) ends it at once, exit 0,
    without ever opening its listeners. It was held until the start deadline, and the
    instance then opened its ports, only to drain them at once."""
    dead = free_port()  # nobody listens: Redis refuses every attempt
    state = (f"state:\n  backend: redis\n  url: redis://127.0.0.1:{dead}/0\n"
             f"  signing_key_env: {STATE_KEY_ENV}\n  snapshot_path: {tmp_path}/snap.json\n"
             "  start_timeout: 30s\n")
    cfg = write_config(tmp_path, two_versions(dead, dead, 100, 0), state=state,
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=workers)
    # every worker is in its start (its signal handlers are installed by then)
    await _to_thread(wait_until_sync, lambda: gw.output().count('phase="config"') == workers,
                     20.0)
    began = time.monotonic()
    gw.signal(signal.SIGTERM)
    rc = await _to_thread(gw.proc.wait, 20)
    took = time.monotonic() - began
    assert rc == 0, gw.output()
    assert took < 8.0, f"stopped {took:.1f}s after SIGTERM:\n{gw.output()}"
    assert 'phase="listening"' not in gw.output()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.data_port), timeout=2).close()
