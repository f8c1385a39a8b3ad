"""`killgate serve --workers N` past 4 per CPU (at least 8) is refused before anything
starts: a typo (`--workers 40` for 4) forked 40 processes of ~70 MiB each on a 2-core
host, every one an instance each receipt waits for. Found by the new-user review
(revnewuser2).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli.main import max_workers
from tests.conftest import two_versions, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)


async def test_too_many_workers_are_refused_before_anything_starts(tmp_path: Path) -> None:
    assert max_workers() == max(8, 4 * (os.cpu_count() or 1))
    cfg = write_config(tmp_path, two_versions(1, 2))
    n = max_workers() + 1
    res = await acli("serve", "-c", str(cfg), "--workers", str(n))
    assert res.returncode == 2 and not res.stdout, res
    assert res.stderr.startswith(f"killgate: --workers {n} is more than {max_workers()}, "
                                 "4 per CPU"), res.stderr
    assert "phase" not in res.stderr  # (nothing started: no supervisor, no worker)
    assert not (tmp_path / "store.json").exists()
