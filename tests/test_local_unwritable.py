"""The file store in a folder it cannot write: a commit (a re-seed at start, a kill) and a
read of the trail are StoreUnavailable, which every caller handles, saying which file. An
OSError there ended `killgate serve` with a traceback at its first re-seed (found running
the image as a non-root user on a read-only folder: the deployment review). A folder that
is a file stands for it here (root writes anywhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreUnavailable
from gateway.state.local import LocalStore

pytestmark = pytest.mark.timeout(30)


async def test_a_commit_and_a_read_where_nothing_can_be_written_say_so(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("not a folder")
    store = LocalStore(tmp_path / "var" / "store.json")
    with pytest.raises(StoreUnavailable, match=r"cannot write .*store\.json\.lock"):
        await store.commit(None, StateDoc(generation=1), None)
    with pytest.raises(StoreUnavailable, match=r"cannot write .*store\.json\.lock"):
        await store.audit_newest(10)
    with pytest.raises(StoreUnavailable, match=r"cannot write .*store\.json\.lock"):
        await store.idem_claim("k", {"a": 1}, 60)
