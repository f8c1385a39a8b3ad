"""benchmarks/kill_stages.py's stamps hook functions of the kill path by name: a rename or a
move made it print `n=0` for weeks (RESULTS.md §51). Every name its stamps use must resolve
now, and a missing one must stop the benchmark before it starts anything, naming it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

STAGES = Path(__file__).resolve().parent.parent / "benchmarks" / "killstages"
pytestmark = pytest.mark.timeout(60)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def targets(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(STAGES))
    monkeypatch.delitem(sys.modules, "targets", raising=False)
    return _load(STAGES / "targets.py", "targets")


def test_every_hooked_function_exists(targets: ModuleType) -> None:
    assert targets.missing() == []
    for module, path in targets.TARGETS:
        _owner, _name, fn = targets.resolve(module, path)
        assert callable(fn), (module, path)


def test_the_stamps_hook_only_listed_functions(targets: ModuleType) -> None:
    """sitecustomize.py takes every function it wraps from TARGETS (by its path): one it
    used without listing would escape the checks above."""
    source = (STAGES / "sitecustomize.py").read_text()
    used = set(re.findall(r'fns\["([\w.]+)"\]', source)) \
        | set(re.findall(r'wrap\("([\w.]+)"', source))
    listed = {path for _module, path in targets.TARGETS}
    assert used, "no hooked function found in sitecustomize.py"
    assert used <= listed, sorted(used - listed)


def test_a_missing_function_is_named(targets: ModuleType) -> None:
    with pytest.raises(targets.MissingTarget, match=r"gateway\.state\.resp\.RespConnection"
                       r"\.gone no longer exists"):
        targets.resolve("gateway.state.resp", "RespConnection.gone")
    with pytest.raises(targets.MissingTarget, match=r"gateway\.nowhere cannot be imported"):
        targets.resolve("gateway.nowhere", "f")


def test_kill_stages_refuses_to_run_with_a_missing_function(
        targets: ModuleType, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Before any process starts: exit 1, the function named (the run printed n=0)."""
    monkeypatch.setattr(targets, "TARGETS",
                        (*targets.TARGETS, ("gateway.admin.api", "AdminApi._action")))
    stages = _load(STAGES.parent / "kill_stages.py", "kill_stages_under_test")
    monkeypatch.setattr(sys, "argv", ["kill_stages.py", "--kills", "2"])
    assert stages.main() == 1
    assert "gateway.admin.api.AdminApi._action no longer exists" in capsys.readouterr().err
