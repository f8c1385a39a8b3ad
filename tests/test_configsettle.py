"""Reading a config only once its writer is done (gateway/configsettle.py), on real files
and real open file descriptions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.configsettle import path_ident, read_settled
from gateway.errors import ConfigError, ConfigUnsettled


def leases_work(folder: Path) -> bool:
    """Whether this kernel and filesystem grant read leases (the writer probe)."""
    import fcntl

    probe = folder / ".lease-probe"
    probe.write_text("x")
    fd = os.open(probe, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True
    except (OSError, AttributeError):
        return False
    finally:
        os.close(fd)
        probe.unlink()


def test_a_file_open_for_writing_is_not_read_until_its_writer_closes_it(
        tmp_path: Path) -> None:
    if not leases_work(tmp_path):
        pytest.skip("no read leases here: the writer probe cannot tell (documented)")
    path = tmp_path / "killgate.yaml"
    path.write_text("routes: []\n")
    with open(path, "a") as f:
        f.write("# more\n")
        f.flush()
        with pytest.raises(ConfigUnsettled, match="open for writing"):
            read_settled(path, path_ident(path))
    data, seen = read_settled(path, path_ident(path))
    assert data == b"routes: []\n# more\n" and seen == path_ident(path)


def test_a_file_that_changed_since_it_was_quiet_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "killgate.yaml"
    path.write_text("routes: []\n")
    quiet = path_ident(path)
    path.write_text("routes: []\nlisten: 127.0.0.1:0\n")  # (size and ctime differ)
    with pytest.raises(ConfigUnsettled, match="after it settled"):
        read_settled(path, quiet)
    replaced = tmp_path / "next.yaml"
    replaced.write_text("routes: []\nlisten: 127.0.0.1:0\n")
    quiet = path_ident(path)
    replaced.replace(path)  # same size, a new inode
    with pytest.raises(ConfigUnsettled, match="after it settled"):
        read_settled(path, quiet)
    assert read_settled(path, path_ident(path))[0].startswith(b"routes")


def test_a_missing_file_is_a_config_error_not_a_wait(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_settled(tmp_path / "nothing.yaml", None)
