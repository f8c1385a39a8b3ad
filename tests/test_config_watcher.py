"""The config watcher on its own (gateway/control/reload.py): an error no check foresaw is
a refused reload, and reloading goes on (by the file watcher and by SIGHUP's path)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.configfile import LoadedConfig, load_config
from gateway.control.reload import ConfigWatcher
from gateway.telemetry.metrics import Metrics
from tests.conftest import two_versions, wait_until, write_config


def _rewrite(tmp: Path, routes: str) -> None:
    """The config file replaced at once (the watcher sees no half-written file)."""
    new = write_config(tmp, routes, name="next.yaml")
    new.replace(tmp / "killgate.yaml")


async def test_an_unforeseen_error_is_a_refused_reload_and_reloading_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path, two_versions(1, 2, 100, 0))
    first = load_config(path)
    current: list[LoadedConfig] = [first]
    broken = [True]

    async def apply(loaded: LoadedConfig) -> None:
        if broken[0]:  # a step of applying that breaks (once: RecursionError in a dump)
            raise RecursionError("maximum recursion depth exceeded")
        current[0] = loaded

    metrics = Metrics()
    watcher = ConfigWatcher(path, lambda: current[0], apply, lambda _l: None, metrics,
                            debounce=0.05, watch=True)
    await watcher.start()
    try:
        _rewrite(tmp_path, two_versions(1, 2, 50, 50))
        await wait_until(lambda: metrics.get("killgate_config_reload_rejected_total") >= 1, 10,
                         0.02, "the refused reload")
        assert "RecursionError" in (watcher.outcome.last_error or "")
        assert watcher.outcome.loaded_digest == first.digest and current[0] is first
        assert any(r.levelno == logging.ERROR and "config_reload_failed" in r.getMessage()
                   for r in caplog.records)

        broken[0] = False  # the file watcher's task is still there to pick the next edit
        _rewrite(tmp_path, two_versions(1, 2, 20, 80))
        await wait_until(lambda: current[0] is not first, 10, 0.02, "the next reload")
        assert watcher.outcome.last_error is None
        assert metrics.get("killgate_config_reloads_total") == 1

        broken[0] = True  # and SIGHUP's path (a task of its own) refuses, not raises
        _rewrite(tmp_path, two_versions(1, 2, 10, 90))
        assert await watcher.reload("sighup") is False
    finally:
        await watcher.stop()
