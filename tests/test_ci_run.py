"""`.ci/run` fails when any of its steps fails (deploy review 5).

CI judges a run by .ci/run's exit code (and a run that exits 0 having run no test still
lands). The script is run for real, in a copy of its folder, with the programs it calls
(python3, the venv's pip, pytest, ruff, mypy; apt-get in case something is missing) as
stand-ins on PATH that record that they ran and fail where the case says."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

# a stand-in: logs its name and arguments, fails when its name and arguments match $FAIL
_STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $*" in
  $FAIL) exit 3 ;;
esac
if [ "$(basename "$0")" = python3 ] && [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  for tool in pip python ruff mypy; do cp "$0" "$3/bin/$tool"; done
fi
exit 0
"""


def _run_ci(tmp_path: Path, fail: str) -> tuple[int, list[str]]:
    repo, stubs = tmp_path / "repo", tmp_path / "stubs"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci/run", repo / ".ci/run")
    stubs.mkdir()
    for name in ("python3", "apt-get", "sudo"):
        (stubs / name).write_text(_STUB)
        (stubs / name).chmod(stat.S_IRWXU)
    log = tmp_path / "ran.log"
    env = {"PATH": f"{stubs}:/usr/bin:/bin:/usr/sbin:/sbin", "STUB_LOG": str(log),
           "FAIL": fail, "HOME": str(tmp_path)}
    res = subprocess.run(["bash", str(repo / ".ci/run")], env=env, capture_output=True,
                         text=True, timeout=30, cwd=tmp_path)
    return res.returncode, log.read_text().splitlines() if log.exists() else []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fail", ["python3 -m venv*", "pip install -q -e .\\[test\\]*",
                                  "python -m pytest*", "ruff *", "mypy *"],
                         ids=["venv", "install", "tests", "ruff", "mypy"])
def test_a_failing_step_fails_the_run(tmp_path: Path, fail: str) -> None:
    """The README's test command is one `&&` list, and `set -e` does not stop at a command
    of such a list that is not its last: an install of the test extras that failed (an
    unreachable index, a dependency that cannot be resolved) skipped pytest, the lint
    steps passed, and .ci/run exited 0 having run no test."""
    code, ran = _run_ci(tmp_path, fail)
    assert code != 0, ran
    if fail.startswith(("python3", "pip")):  # (stopped there: no later step ran)
        assert not any(line.startswith(("python -m pytest", "ruff", "mypy")) for line in ran), ran


@pytest.mark.timeout(60)
def test_every_step_passing_passes_the_run(tmp_path: Path) -> None:
    code, ran = _run_ci(tmp_path, "no-such-step")
    assert code == 0, ran
    assert "python -m pytest" in ran and any(line.startswith("mypy") for line in ran), ran


@pytest.mark.timeout(60)
def test_the_run_installs_the_venv_module_where_python_lacks_it(tmp_path: Path) -> None:
    """README: Debian's python3 needs python3-venv before `python3 -m venv` works; .ci/run,
    which installs what the tests need on a clean Debian/Ubuntu machine, did not (its
    `python3 -m venv` failed there, and so did the run, before any test)."""
    code, ran = _run_ci(tmp_path, "python3 -c*ensurepip*")
    assert code == 0, ran
    assert any(line.startswith("apt-get install") and "python3-venv" in line.split()
               for line in ran), ran
