"""`killgate check` refuses a redis state.url the store could never connect with (hostile
config review): it said ok, and `killgate serve` then answered 503 state_unknown on every
route for as long as it ran, logging 'state.url cannot be used'."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import cli_fork

pytestmark = pytest.mark.timeout(60)

ROUTES = ("routes:\n  - name: iris\n    match: {path_prefix: /iris}\n    stable: v1\n"
          "    versions:\n      - {name: v1, url: 'http://127.0.0.1:1'}\n")


def _check(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(f"state:\n  backend: redis\n  url: '{url}'\n  signing_key_env: KG_REVIEW_KEY\n"
                   + ROUTES)
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    return cli_fork.run(["check", str(cfg)], {"PATH": "/usr/bin:/bin", "KG_REVIEW_KEY": "k" * 40,
                                              "KILLGATE_JWT_SECRET": "s" * 40},
                        os.getcwd(), 30)


@pytest.mark.parametrize("url", [
    "redis://ops:hunter2-pw@127.0.0.1:notaport/0",
    "redis://:hunter2-pw@127.0.0.1:6379/0?ssl_nonsense=1",
    "redis+sentinel://:hunter2-pw@10.0.0.1:26379,10.0.0.2:26379",
    "redis+sentinel://:hunter2-pw@10.0.0.1:26x79/mymaster",
])
def test_a_state_url_that_cannot_connect_is_refused(tmp_path: Path, url: str) -> None:
    res = _check(tmp_path, url)
    assert res.returncode == 1, res.stdout
    assert res.stderr.startswith("state.url: cannot be used"), res.stderr
    assert "hunter2" not in res.stderr + res.stdout


@pytest.mark.parametrize("url", [
    "redis://ops:hunter2-pw@10.0.0.9:6379/2",
    "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/mymaster/1",  # (no port: 26379)
    "unix:///run/redis.sock?db=1"])
def test_a_usable_state_url_passes(tmp_path: Path, url: str) -> None:
    res = _check(tmp_path, url)
    assert res.returncode == 0, res.stderr


def test_serve_refuses_an_access_log_it_cannot_open_by_name(tmp_path: Path) -> None:
    """`killgate serve` with an access log path that cannot be opened ended in a Python
    traceback (FileNotFoundError); now one line naming the setting, exit 1."""
    from tests.conftest import SECRET, write_config

    cfg = write_config(tmp_path, ROUTES.split("\n", 1)[1].replace("  - ", "- ", 1)
                       .replace("\n    ", "\n  "),
                       extra=("server: {access_log: true}\ntelemetry:\n  access_log: "
                              f"{{path: {tmp_path}/not-a-folder.txt/access.log}}\n"))
    (tmp_path / "not-a-folder.txt").write_text("")
    # (forked as _check is: the refusal comes after the imports a fresh interpreter repeats)
    res = cli_fork.run(["serve", "-c", str(cfg)],
                       {"PATH": "/usr/bin:/bin", "KILLGATE_TEST_SECRET": SECRET}, os.getcwd(), 30)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "killgate: config: telemetry.access_log.path: " in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize("path", ["health", "v2/health/ready", "/health check", "/h#x"])
def test_a_health_path_that_cannot_be_appended_is_refused(tmp_path: Path, path: str) -> None:
    """health.path is appended to each version's url: 'health' made http://h:9101health,
    every probe failed, and the route lost every version (503) on a file check said ok."""
    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(ROUTES + f"    health: {{path: '{path}'}}\n")
    res = cli_fork.run(["check", str(cfg)], {"PATH": "/usr/bin:/bin",
                                             "KILLGATE_JWT_SECRET": "s" * 40}, os.getcwd(), 30)
    assert res.returncode == 1, res.stdout
    assert res.stderr.startswith("routes[0].health.path: must start with '/'"), res.stderr


@pytest.mark.parametrize(("hook", "code", "says"), [
    ("secret_file: gone.key", 1, "events.webhooks[0].secret_file: "),
    ("secret_file: short.key", 1, "holds 5 bytes, fewer than 32"),
    ("secret_env: KG_REVIEW_HOOK_UNSET", 0, "note: events.webhooks[0].secret_env: "),
    ("secret_file: long.key", 0, ""),
])
def test_a_webhook_secret_that_cannot_be_read_is_reported(tmp_path: Path, hook: str,
                                                          code: int, says: str) -> None:
    """The gateway sends nothing to a webhook whose secret it cannot read (an ERROR per
    event); check said ok to a missing or short secret file."""
    (tmp_path / "short.key").write_text("short")
    (tmp_path / "long.key").write_text("h" * 40)
    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(f"events:\n  webhooks:\n    - {{url: 'https://hooks.example.com/k', {hook}}}\n"
                   + ROUTES)
    res = cli_fork.run(["check", str(cfg)], {"PATH": "/usr/bin:/bin",
                                             "KILLGATE_JWT_SECRET": "s" * 40}, os.getcwd(), 30)
    assert res.returncode == code, res.stderr
    assert says in res.stderr, res.stderr


async def test_serve_with_a_local_store_it_cannot_use_still_stops_cleanly(
        tmp_path: Path) -> None:
    """state.path under a file (a local store it can never write): the gateway serves
    degraded as documented, but SIGTERM ended in a traceback and a non-zero exit (the
    instance file's removal raised NotADirectoryError out of the state sync's stop)."""
    import asyncio
    import signal

    from tests.conftest import SECRET, free_port, wait_until, write_config

    (tmp_path / "blocker").write_text("")
    state = (f"state:\n  backend: local\n  path: {tmp_path}/blocker/store.json\n"
             f"  snapshot_path: {tmp_path}/snapshot.json\n  start_timeout: 1s\n")
    cfg = write_config(tmp_path, ROUTES.split("\n", 1)[1].replace("  - ", "- ", 1)
                       .replace("\n    ", "\n  "), state=state,
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:  # noqa: ASYNC230 - the child writes it
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "-c", str(cfg), stdout=out, stderr=out,
            env={"PATH": "/usr/bin:/bin", "KILLGATE_TEST_SECRET": SECRET})
    try:
        await wait_until(lambda: b'phase="listening"' in log.read_bytes(), 20,
                         interval=0.05, what="listening")
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]


@pytest.mark.parametrize("where", ["file.txt/access.log", "file.txt/logs/access.log", ""])
def test_check_refuses_an_access_log_serve_cannot_open(tmp_path: Path, where: str,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An access log in a file, or a folder itself: `killgate check` said ok, and
    `killgate serve` refused to start on the file."""
    from gateway.cli.main import main

    monkeypatch.setenv("KILLGATE_JWT_SECRET", "s" * 40)
    (tmp_path / "file.txt").write_text("")
    cfg = tmp_path / "killgate.yaml"
    for path, rc in ((tmp_path / where, 1), (tmp_path / "access.log", 0)):
        cfg.write_text("server: {access_log: true}\ntelemetry:\n  access_log: "
                       f"{{path: '{path}'}}\n" + ROUTES)
        assert main(["check", str(cfg)]) == rc
        said = capsys.readouterr().err
        assert said.startswith("telemetry.access_log.path: ") if rc else not said, said


def test_check_notes_an_access_log_folder_only_the_deployed_host_has(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`killgate check` runs where the config is written (CI), and refused an access log in
    /var/log/killgate/ because that folder exists only where killgate runs. It notes it (exit
    0), as it notes a secret set only there; `serve` still refuses to start without it."""
    from gateway.cli.main import main
    from tests.conftest import SECRET

    monkeypatch.setenv("KILLGATE_JWT_SECRET", "s" * 40)
    cfg = tmp_path / "killgate.yaml"
    log = tmp_path / "deployed" / "killgate" / "access.log"
    cfg.write_text(f"server: {{access_log: true}}\ntelemetry:\n  access_log: {{path: '{log}'}}\n"
                   + ROUTES)
    assert main(["check", str(cfg)]) == 0
    said = capsys.readouterr().err
    assert said == (f"note: telemetry.access_log.path: {log}: its folder {log.parent} does not "
                    "exist on this host; `killgate serve` refuses to start until it exists\n"), said
    res = cli_fork.run(["serve", "-c", str(cfg)],
                       {"PATH": "/usr/bin:/bin", "KILLGATE_JWT_SECRET": SECRET}, os.getcwd(), 30)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert f"telemetry.access_log.path: {log}: its folder" in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize("drills", ["{key_file: missing.key}", "{key_env: KG_SHORT_DRILL_KEY}"])
def test_check_notes_a_drill_key_serve_cannot_use(tmp_path: Path, drills: str,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A drills.key_file that cannot be read (or a key variable shorter than 32 bytes):
    `check` said ok, `serve` started, and the first drill, at the GameDay, was refused
    409 no_drill_key."""
    from gateway.cli.main import main

    monkeypatch.setenv("KILLGATE_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("KG_SHORT_DRILL_KEY", "short")
    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(f"drills: {drills}\n" + ROUTES)
    assert main(["check", str(cfg)]) == 0
    said = capsys.readouterr().err
    assert said.startswith("note: drills: ") and "409 no_drill_key" in said, said
    cfg.write_text(ROUTES)  # (the drill key derived from the admin secret: nothing to say)
    assert main(["check", str(cfg)]) == 0
    assert capsys.readouterr().err == ""
