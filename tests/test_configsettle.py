"""Reading a config only once its writer is done (gateway/configsettle.py), on real files
and real open file descriptions."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.configsettle import START_WAIT_S, path_ident, read_settled, settled_at_start
from gateway.errors import ConfigError, ConfigUnsettled
from tests.conftest import GatewayProcess, free_port, two_versions, wait_until, write_config


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


def test_a_first_load_waits_for_the_writer_and_reads_what_it_wrote(tmp_path: Path) -> None:
    """serve's first read (configsettle.settled_at_start): a file held open for writing is
    read once its writer closes it, whole; never the half the writer had written."""
    if not leases_work(tmp_path):
        pytest.skip("no read leases here: the writer probe cannot tell (documented)")
    path = tmp_path / "killgate.yaml"
    got: list[tuple[bytes | None, str | None]] = []
    with open(path, "w") as f:
        f.write("routes: []\n")
        f.flush()
        t0 = time.monotonic()
        assert settled_at_start(path, wait=0.2) == (None, "open for writing by another process")
        assert time.monotonic() - t0 >= 0.2
        reader = threading.Thread(target=lambda: got.append(settled_at_start(path, wait=30)))
        reader.start()
        f.write("listen: 127.0.0.1:0\n")
    reader.join(10)
    assert got == [(b"routes: []\nlisten: 127.0.0.1:0\n", None)]
    assert settled_at_start(tmp_path / "missing.yaml") == (None, None)  # (load_config says why)


@pytest.mark.timeout(40)
async def test_serve_starts_from_a_file_held_open_for_writing_after_waiting_and_says_so(
        tmp_path: Path, gateway_procs: Callable[..., GatewayProcess]) -> None:
    """A writer that keeps the file open does not hold the start up for ever: after
    START_WAIT_S serve reads the file as it is, with a WARNING saying what to check."""
    if not leases_work(tmp_path):
        pytest.skip("no read leases here: the writer probe cannot tell (documented)")
    cfg = write_config(tmp_path, two_versions(free_port(), free_port()),
                       listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    writer = os.open(cfg, os.O_WRONLY | os.O_APPEND)  # held open for the whole start
    try:
        t0 = time.monotonic()
        gw = gateway_procs(cfg)
        await wait_until(lambda: "config_not_settled" in gw.output(), 30,
                         what="the start to stop waiting")
        await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
        assert time.monotonic() - t0 >= START_WAIT_S
    finally:
        os.close(writer)
    line = next(x for x in gw.output().splitlines() if "config_not_settled" in x)
    assert "open for writing" in line and "warning" in line.lower(), line
