"""File modes of what killgate trusts on disk (gateway/filemodes.py): key files are
checked by `killgate check` and at start (tests/test_config.py), and a state snapshot
that others may write keeps only its kills."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway import filemodes
from gateway.domain.statedoc import KillFlag, RouteOverride, StateDoc
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config


@pytest.mark.parametrize(("mode", "secret", "says"), [
    (0o600, True, None),
    (0o400, True, None),
    (0o640, True, None),  # group-readable: a Kubernetes fsGroup mount
    (0o644, True, "may be read or written by other users (mode 0644)"),
    (0o660, True, "may be written by other users (mode 0660)"),
    (0o602, True, "may be written by other users (mode 0602)"),
    (0o644, False, None),  # a public key, a snapshot: readable is fine
    (0o664, False, "may be written by other users (mode 0664); `chmod go-w`"),
    (0o646, False, "may be written by other users"),
])
def test_modes(tmp_path: Path, mode: int, secret: bool, says: str | None) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(mode)
    got = filemodes.problem(f, secret)
    assert (got is None) if says is None else (got is not None and says in got), got
    assert filemodes.problem(tmp_path / "missing", secret) is None


async def test_a_snapshot_others_may_write_keeps_only_its_kills(tmp_path: Path, backends,
                                                                caplog) -> None:
    """A world-writable snapshot (no signing key: a local store) read at start: its kill
    stays in force (a kill can only stop traffic), its override is not believed."""
    p = await backends(echo_app("v1"))
    doc = StateDoc(generation=7, epoch="e", kills={"version:iris:v2": KillFlag(
        "version", "iris", "v2", "ops", "bad", "2026-01-01T00:00:00.000Z", 7)},
        overrides={"iris": RouteOverride("v2", {"v1": 0.0, "v2": 100.0}, "mallory", "x",
                                         "2026-01-01T00:00:00.000Z", "promote")})
    caplog.set_level(logging.ERROR, "killgate")
    held = []
    for run, mode in (("open", 0o666), ("owner", 0o644)):
        (tmp_path / run).mkdir()
        snap = tmp_path / run / "snapshot.json"
        snap.write_text(json.dumps(doc.to_json()))
        snap.chmod(mode)
        state = (f"state:\n  backend: local\n  path: {tmp_path / run}/store.json\n"
                 f"  snapshot_path: {snap}\n")
        cfg = write_config(tmp_path / run, two_versions(p, p), state=state)
        async with running_gateway(cfg) as g:
            held.append(g.gw.holder.doc)
    untrusted, trusted = held
    assert set(untrusted.kills) == {"version:iris:v2"} and untrusted.overrides == {}
    assert [r.getMessage() for r in caplog.records].count("snapshot_untrusted") == 1
    # the same file, writable by its owner only: believed whole
    assert set(trusted.kills) == {"version:iris:v2"} and set(trusted.overrides) == {"iris"}
