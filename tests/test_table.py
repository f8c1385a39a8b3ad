"""The swap-once holder (control/table.py): a failing rebuild changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import gateway.control.table as table_mod
from gateway.configfile import load_config
from gateway.control.table import TableHolder
from gateway.domain.statedoc import KillFlag, StateDoc
from tests.conftest import two_versions, write_config


def _holder(tmp_path: Path) -> TableHolder:
    return TableHolder(load_config(write_config(tmp_path, two_versions(1, 2))))


def test_a_failing_rebuild_leaves_table_doc_and_config_in_force(tmp_path: Path,
                                                                monkeypatch) -> None:
    holder = _holder(tmp_path)
    flag = KillFlag("route", "iris", None, "a", "r", "t", 1)
    assert holder.apply_doc(StateDoc(generation=1, kills={"route:iris": flag}))
    before = holder.held
    seen: list[object] = []
    holder.listen(lambda old, new: seen.append(new))
    other = load_config(write_config(tmp_path, two_versions(3, 4), name="other.yaml"))

    def broken(*args: object, **kw: object) -> object:
        raise RuntimeError("rebuild failed")

    monkeypatch.setattr(table_mod, "build_table", broken)
    monkeypatch.setattr(table_mod, "rebuild_table", broken)  # (a new document alone)
    for attempt in (lambda: holder.apply_doc(StateDoc(generation=2)),
                    lambda: holder.set_config(other),
                    lambda: holder.set_unhealthy(frozenset({("iris", "v1")})),
                    lambda: holder.set_fail_closed(True)):
        with pytest.raises(RuntimeError):
            attempt()
        assert holder.held is before  # doc, loaded config, health, table: all as they were
        assert holder.doc.generation == 1 and holder.loaded is before.loaded
        assert holder.table.by_name["iris"].killed == "route"
    assert seen == []  # no listener heard of a swap that did not happen
    monkeypatch.undo()
    holder.set_config(other)
    assert holder.loaded is other and holder.table is holder.held.table and len(seen) == 1
