"""A `serve --workers N` group's waiting config changes (impleft9, control/reloadkept.py):
the workers shared one file (`<snapshot_path>.reload-audits`), each rewrote it whole with ITS
list and the first whose list emptied removed it. A change a worker held that its sibling
did not (its watcher saw a file the sibling's debounce skipped; a refusal only the sibling
met) was then on disk nowhere: the group's SIGKILL, or that worker's crash, before the store
answered lost its `config.reload` event for good, nothing said so. Each process now writes
its own file (`.reload-audits.w<i>`) and a start takes over every file beside it.

The files as the workers make them (ConfigHistory's own construction, a real signing key,
real files in a folder); what a start of the group would queue again is what `load` reads.
No store: nothing here crosses a socket (the claims that record a change once are
test_reload_audit_group's)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.control.confighistory import ConfigHistory
from gateway.control.reloadkept import KeptChanges
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.state.signing import Key, Keyring
from tests.conftest import STATE_KEY

pytestmark = pytest.mark.timeout(30)


def worker(snapshot: Path, name: str) -> KeptChanges:
    """The waiting changes' file of a process named `name` (serving.instance_id's shape:
    `<host>-<pid>-<group tag>-w<i>` for a worker), as ConfigHistory makes it."""
    sync = SimpleNamespace(snapshot=SimpleNamespace(path=snapshot),
                           keys=Keyring(Key.of(STATE_KEY.encode()), context="kgtest"))
    kept = ConfigHistory(sync, StateDoc, name).audits.kept  # type: ignore[arg-type]
    assert kept is not None
    return kept


def change(key: str) -> tuple[str, AuditDraft, float]:
    return key, AuditDraft("config-reload", "config.reload", {"config": "killgate.yaml"},
                           "file changed", {"digest": "a"}, {"digest": key}, "", "w"), 1.0


def group_start(snapshot: Path) -> set[str]:
    """The keys a start of the group (two workers) queues again (a key queued by both is
    recorded once, by its claim)."""
    keys: set[str] = set()
    for i in range(2):
        keys |= {k for k, _, _ in worker(snapshot, f"host-{100 + i}-a1b2c3-w{i}").load()}
    return keys


def test_a_change_only_one_worker_holds_survives_its_siblings_empty_list(
        tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    w0, w1 = worker(snapshot, "host-1-a1b2c3-w0"), worker(snapshot, "host-2-a1b2c3-w1")
    w0.save([change("x")])
    w1.save([change("x"), change("y")])  # (y: a change only w1 made)
    w0.save([])  # w0 recorded x: its list is empty
    # (the group SIGKILLed now, w1's y not yet recorded: what the next start queues)
    assert "y" in group_start(snapshot), sorted(os.listdir(tmp_path))


def test_the_last_writer_does_not_erase_a_siblings_changes(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    w0, w1 = worker(snapshot, "host-1-a1b2c3-w0"), worker(snapshot, "host-2-a1b2c3-w1")
    w0.save([change("x")])
    w1.save([change("y")])
    assert group_start(snapshot) == {"x", "y"}, sorted(os.listdir(tmp_path))


def test_a_start_takes_over_the_other_files_once_its_own_holds_them(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    worker(snapshot, "host-1-a1b2c3-w0").save([change("x"), change("y")])
    worker(snapshot, "host-2-a1b2c3-w1").save([change("x")])
    worker(snapshot, "host-3-a1b2c3-w7").save([change("z")])  # (a slot the group lost)
    worker(snapshot, "host-4-d4e5f6").save([change("q")])  # (a lone process before)
    (tmp_path / "snapshot.json.reload-audits.w5").write_bytes(b"not signed")
    lone = worker(snapshot, "host-5-a1b2c3")
    changes = lone.load()
    assert [k for k, _, _ in changes] == ["q", "x", "y", "z"]  # (own first, each once)
    assert (tmp_path / "snapshot.json.reload-audits.w5.refused").exists()
    lone.settle()  # (not yet written: the taken files stay, for the next start)
    taken = sorted(n for n in os.listdir(tmp_path) if ".adopt." in n)
    assert len(taken) == 3, taken
    lone.save(changes)
    lone.settle()
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith(".")) == [
        "snapshot.json.reload-audits", "snapshot.json.reload-audits.w5.refused"]
    # a sibling writing again after its file was taken makes it afresh
    w1 = worker(snapshot, "host-2-a1b2c3-w1")
    w1.save([change("x"), change("n")])
    assert sorted(k for k, _, _ in worker(snapshot, "host-6-a1b2c3-w0").load()) == [
        "n", "q", "x", "y", "z"]


def test_the_changes_taken_over_are_queued_in_the_order_they_were_made(
        tmp_path: Path) -> None:
    """(revleft9) A start queued its own file's changes first and then the others', file by
    file: a change a sibling made BEFORE this worker's own (its watcher saw a file this
    worker's debounce skipped, or this worker had recorded it before a store that came
    back empty) was recorded after it, and the trail, whose events keep the order of the
    changes (reloadaudit.py), ended on the older config. Each file's own order is kept;
    between files, the times the changes were made decide."""
    snapshot = tmp_path / "snapshot.json"

    def made(key: str, at: float) -> tuple[str, AuditDraft, float]:
        return change(key)[0], change(key)[1], at

    worker(snapshot, "host-1-a1b2c3-w0").save([made("c1-c2", 30.0)])
    worker(snapshot, "host-2-a1b2c3-w1").save([made("c0-c1", 10.0), made("c1-c2", 30.0)])
    worker(snapshot, "host-3-a1b2c3-w2").save([made("c2-c3", 20.0), made("c3-c4", 5.0)])
    # (w2's clock stepped back between its two: its own order stands)
    keys = [k for k, _, _ in worker(snapshot, "host-4-a1b2c3-w0").load()]
    assert keys == ["c0-c1", "c2-c3", "c3-c4", "c1-c2"], keys
