"""The drill's timeline picture (cli/drillplot.py): binning, SVG and PNG, and a drill that
goes on without it when matplotlib is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.cli.drillplot import available, bins, timeline
from gateway.domain.drillreport import Obs

REPORT = {"id": "d-1", "kind": "kill", "route": "iris-drill", "version": "v2",
          "verdict": "passed", "rate": 10,
          "marks_ms": {"inject_sent": 1000, "inject_done": 1010, "restore_sent": 3000,
                       "restore_done": 3020, "outage_start": 1500, "outage_end": 2500}}


def obs() -> list[Obs]:
    out = []
    for inst in ("http://a", "http://b"):
        for i in range(40):
            t = i / 10
            killed = 1.0 <= t < 3.0
            out.append(Obs(inst, t, t + 0.01, 503 if killed else 200,
                           None if killed else ("v1" if i % 2 else "v2"),
                           "killed" if killed else "weighted"))
    out.append(Obs("http://a", 3.95, 3.96, 0, None, None))
    return out


def test_bins_count_answers_by_instance_and_outcome() -> None:
    xs, rows = bins(obs(), 1.0)
    assert xs == [0.0, 1.0, 2.0, 3.0]
    assert rows["http://a"]["killed"] == [0, 10, 10, 0]
    assert rows["http://a"]["v2"] == [5, 0, 0, 5]
    assert rows["http://a"]["error"] == [0, 0, 0, 1]
    assert bins([], 1.0) == ([], {})


@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_the_picture_is_written(tmp_path: Path, suffix: str) -> None:
    assert available()
    out = timeline(REPORT, obs(), tmp_path / f"d-1.{suffix}")
    assert out is not None and out.stat().st_size > 5000
    head = out.read_bytes()[:200]
    assert (b"<svg" in out.read_bytes()[:2000]) if suffix == "svg" else head.startswith(
        b"\x89PNG")
    if suffix == "svg":
        text = out.read_text()
        assert "injection" in text and "answered by v2" in text and "store unreachable" in text


def test_without_matplotlib_there_is_no_picture_and_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert not available()
    assert timeline(REPORT, obs(), tmp_path / "d-1.svg") is None
    assert not (tmp_path / "d-1.svg").exists()
