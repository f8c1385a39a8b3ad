"""tests/drillrig.Drill: a drill whose wait fails leaves no open pipe behind.

The drill CLI's stdout and stderr are pipes (tests/cli_fork_spawn.Spawned). A failed wait_line
(no 'injected' from the drill) left them open; the failed test's traceback held them, and
the next full collection, in whichever test ran later on that xdist worker, found them: an
unraisable ResourceWarning (filterwarnings = error) failed that test instead. Seen twice in
CI: test_metrics_scrape_flood, whose 600 connections set off a collection, right after
test_drill_kept's and test_drills' failed waits ("unclosed file <_io.TextIOWrapper name=37
mode='r' encoding='UTF-8'>", two per drill)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from tests.conftest import free_port
from tests.drillfleet import Fleet
from tests.drillrig import FAST, Drill

pytestmark = pytest.mark.timeout(60)


async def test_a_failed_wait_ends_the_drill_and_closes_its_pipes(tmp_path: Path) -> None:
    # an admin URL nobody listens at: the drill says why on its stderr and ends
    fleet = cast(Fleet, SimpleNamespace(tmp=tmp_path, admin=f"http://127.0.0.1:{free_port()}"))
    drill = Drill(fleet, "kill", "--route", "iris-drill", "--version", "v2", *FAST)
    with pytest.raises(AssertionError, match="no 'injected' from the drill"):
        await drill.wait_line("injected")
    assert drill.proc.stdout is not None and drill.proc.stderr is not None
    assert drill.proc.stdout.closed and drill.proc.stderr.closed
    assert drill.proc.poll() is not None
