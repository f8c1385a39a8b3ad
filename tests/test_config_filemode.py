"""The config file is refused when other users may write it (config review): anyone who
could write it could point the key settings, the state store and the routes elsewhere, and
`check` and `serve` read it regardless (key files were checked, the file naming them not).
What is shipped and mounted the usual ways keeps working: the examples, a Kubernetes
ConfigMap (root-owned 0644 behind links), a user's own 0600/0644 file."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.configfile import load_config
from gateway.errors import ConfigError
from tests import cli_fork
from tests.configmap import ConfigMapVolume

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = ROOT / "config/minimal.yaml"
pytestmark = pytest.mark.timeout(60)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # (forked from a process that imported the CLI: tests/cli_fork.py; `serve` only refuses)
    return cli_fork.run(list(args), {"PATH": "/usr/bin:/bin", "KILLGATE_JWT_SECRET": "s" * 40},
                        str(ROOT), 30)


def _copy(tmp_path: Path, mode: int) -> Path:
    cfg = tmp_path / "killgate.yaml"
    shutil.copy(MINIMAL, cfg)
    cfg.chmod(mode)
    return cfg


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o602])
def test_check_and_serve_refuse_a_config_others_may_write(tmp_path: Path, mode: int) -> None:
    cfg = _copy(tmp_path, mode)
    want = f"{cfg} may be written by other users (mode {mode:04o})"
    for args in (["check", str(cfg)], ["serve", "-c", str(cfg)]):
        res = _run(*args)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert want in res.stderr and f"`chmod go-w {cfg}`" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def _private() -> bool:
    me = pwd.getpwuid(os.getuid())
    g = grp.getgrgid(me.pw_gid)
    return g.gr_name == me.pw_name and all(m == me.pw_name for m in g.gr_mem)


def test_group_writable_only_in_the_owners_private_group(tmp_path: Path) -> None:
    """umask 002 (user private groups) makes editors write 0664: accepted when the group is
    the owner's alone, refused otherwise."""
    cfg = _copy(tmp_path, 0o664)
    if _private():
        assert load_config(cfg).digest.startswith("sha256:")
    else:
        with pytest.raises(ConfigError, match="may be written by other users"):
            load_config(cfg)


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640, 0o444])
def test_a_file_only_its_owner_may_write_is_read(tmp_path: Path, mode: int) -> None:
    assert load_config(_copy(tmp_path, mode)).digest.startswith("sha256:")


def test_a_configmap_mount_is_accepted(tmp_path: Path) -> None:
    """The kubelet's layout: config.yaml -> ..data/config.yaml -> a timestamped folder's
    0644 file (the links themselves are 0777, as every link is)."""
    vol = ConfigMapVolume(tmp_path / "cm", {"config.yaml": MINIMAL.read_text()})
    assert load_config(vol.path("config.yaml")).digest.startswith("sha256:")
    assert _run("check", str(vol.path("config.yaml"))).returncode == 0


def test_a_link_to_a_file_others_may_write_is_refused(tmp_path: Path) -> None:
    target = _copy(tmp_path, 0o666)
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=r"mode 0666"):
        load_config(link)



def test_a_folder_others_may_write_to_is_refused(tmp_path: Path) -> None:
    """Whoever may write the folder may replace the file with one of their own (0644,
    writable by no one else: the file's own mode says nothing then)."""
    folder = tmp_path / "shared"
    folder.mkdir()
    cfg = _copy(folder, 0o644)
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match=r"is in a folder other users may write to "
                                          r"\(mode 0777\).*`chmod go-w` the folder"):
        load_config(cfg)
    res = _run("serve", "-c", str(cfg))
    assert res.returncode == 1 and "is in a folder other users may write to" in res.stderr
    folder.chmod(0o1777)  # (sticky, as /tmp: only a file's owner may replace it)
    assert load_config(cfg).digest.startswith("sha256:")
    folder.chmod(0o755)
    assert load_config(cfg).digest.startswith("sha256:")


def test_a_link_is_judged_by_the_folder_of_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    cfg = _copy(real, 0o644)
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / "config.yaml"
    link.symlink_to(cfg)
    real.chmod(0o777)
    with pytest.raises(ConfigError, match=f"{link} is in a folder other users may write to"):
        load_config(link)
    real.chmod(0o755)
    assert load_config(link).digest.startswith("sha256:")
