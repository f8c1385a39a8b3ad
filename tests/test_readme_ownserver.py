"""README's "In front of your own model servers", run as written: its two shell blocks, in
a fresh folder, against two real model servers, with a real `killgate serve` (the new
user's path from the demo to their own config, secret and token)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import ROOT, die_with_parent, free_port, wait_until_sync

pytestmark = pytest.mark.timeout(90)

HEADING = "### In front of your own model servers"
SHELL = f'killgate() {{ {sys.executable!r} -m gateway "$@"; }}\nset -e\n'


def blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def start(script: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)


async def test_the_readme_own_server_steps_work_as_written(tmp_path: Path, backends) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (the README's step uses it)")
    first, second = blocks()
    lines = first.strip().splitlines()
    assert lines[0].startswith("cp config/minimal.yaml killgate.yaml")
    assert lines[-1].startswith("killgate serve -c killgate.yaml")
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "minimal.yaml", tmp_path / "config" / "minimal.yaml")
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    data, admin = free_port(), free_port()
    # the user's own edit ("set each version's url to your model server's"), and ports
    # free on this machine in place of 8080 and 8081
    edit = (f"sed -i -e 's#127.0.0.1:9101#127.0.0.1:{p1}#' -e 's#127.0.0.1:9102#127.0.0.1:{p2}#'"
            f" -e 's#0.0.0.0:8080#127.0.0.1:{data}#' killgate.yaml\n"
            f"printf 'admin:\\n  listen: 127.0.0.1:{admin}\\n' >> killgate.yaml\n")
    script = SHELL + lines[0] + "\n" + edit + "\n".join(lines[1:-1]) + "\nexec " + lines[-1].replace(
        "killgate", f"{sys.executable!r} -m gateway", 1)  # (exec: Ctrl-C reaches serve)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KILLGATE_")}  # (a new user's shell)
    env["PYTHONPATH"] = str(ROOT)
    log = tmp_path / "serve.log"
    serve = start(script, tmp_path, env, log)
    try:
        def ready() -> bool:
            assert serve.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        await asyncio.to_thread(wait_until_sync, ready, 30, what="serve ready")
        assert "killgate.yaml: ok (1 route(s)" in log.read_text()
        assert (tmp_path / "admin.secret").stat().st_mode & 0o077 == 0
        if (ROOT / ".git").exists():  # (followed in a clone: the secret is never committed)
            ignored = await asyncio.to_thread(
                subprocess.run, ["git", "-C", str(ROOT), "check-ignore", "-q", "admin.secret"],
                timeout=10)
            assert ignored.returncode == 0, "git would commit admin.secret"
        two = second.replace("8080", str(data)).replace("8081", str(admin))
        env2 = dict(env, KILLGATE_ADMIN_URL=f"http://127.0.0.1:{admin}")
        res = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", SHELL + two], cwd=tmp_path, env=env2,
            capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        out = res.stdout
        assert "killed version:iris:v2" in out and "lifted version:iris:v2" in out, out
        assert re.search(r"(?im)^x-killgate-version: v1\r?$", out), out
        assert re.search(r"(?m)^iris +v2 +10 +10 +yes", out), out  # status, before the kill
        # the admin API's kill and unkill, as the block shows them (each answers its receipt)
        assert '"kill": "version:iris:v2"' in out and '"unkill": "version:iris:v2"' in out, out
        serve.send_signal(signal.SIGINT)  # Ctrl-C
        assert serve.wait(30) == 0, log.read_text()
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(5)
