"""The quick start: `killgate demo` answers through the gateway, and its printed token works."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli_fork
from tests.conftest import ROOT, die_with_parent, free_port, wait_until_sync

BODY = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.1,2.8,4.7,1.2]}]}'


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_demo_answers_and_its_token_kills(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port, admin = free_port(), free_port()
    log = tmp_path / "demo.log"
    # a shell that has not activated the venv: `killgate` is not on its PATH
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.access(os.path.join(d, "killgate"), os.X_OK))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PATH=path)
    env.pop("KILLGATE_JWT_SECRET", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", str(port),
                                 "--admin-port", str(admin)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=str(ROOT), env=env,
                                start_new_session=True, preexec_fn=die_with_parent)
    try:
        wait_until_sync(lambda: "export KILLGATE_TOKEN=" in log.read_text(), 20,
                        what="the demo to print its instructions")
        url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
        seen: Counter[str] = Counter()
        answers = {}
        for _ in range(200):
            status, headers, body = _post(url, BODY)
            assert status == 200
            version = headers["x-killgate-version"]
            seen[version] += 1
            answers[version] = json.loads(body)["parameters"]["labels"]
        assert 3 <= seen["v2"] <= 45  # the 90/10 split: Binomial(200, 0.1) misses 1 in 4 million
        assert answers["v1"] != answers["v2"]  # the two model versions answer differently
        # the stream
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/models/iris/generate_stream",
                data=b'{"n": 3}', method="POST"), timeout=10) as r:
            assert r.read().count(b"data: ") == 4
        printed = log.read_text()
        token = re.search(r"export KILLGATE_TOKEN=(\S+)", printed).group(1)
        assert f"http://127.0.0.1:{admin}/ui/" in printed  # the console's address
        # (how long the token lasts, and what then: its secret is the demo's own)
        assert "# an admin token for an hour (then restart the demo, or see README " \
            "\"Quick start\")\n  export KILLGATE_TOKEN=" in printed, printed
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["exp"] - claims["iat"] == 3600
        # the printed commands run as printed, in that same kind of shell, from elsewhere
        shell = dict(env, KILLGATE_TOKEN=token)
        kill, unkill = (next(line.strip() for line in printed.splitlines()
                             if f" {verb} --route iris --reason" in line)
                        for verb in ("kill", "unkill"))
        res = subprocess.run(shlex.split(kill), capture_output=True, text=True, timeout=30,
                             cwd=str(tmp_path), env=shell)
        assert res.returncode == 0, (kill, res.stderr)
        assert res.stdout.startswith("killed route:iris")
        status, headers, _ = _post(url, BODY)
        assert status == 503 and headers["x-killgate-decision"] == "killed"
        res = subprocess.run(shlex.split(unkill), capture_output=True, text=True, timeout=30,
                             cwd=str(tmp_path), env=shell)
        assert res.returncode == 0, (unkill, res.stderr)
        status, headers, _ = _post(url, BODY)
        assert status == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        proc.wait(15)
        assert proc.returncode == 0 and time.monotonic() - t0 < 15


def test_the_demo_refuses_pure_python_parsers_and_says_which_cause() -> None:
    """Like `killgate serve`: both listeners parse with C, or nothing starts; the message
    names the ways to end up without (here, AIOHTTP_NO_EXTENSIONS)."""
    env = dict(os.environ, AIOHTTP_NO_EXTENSIONS="1")
    res = subprocess.run([sys.executable, "-m", "gateway", "demo", "--port", str(free_port()),
                          "--admin-port", str(free_port())], capture_output=True, text=True,
                         timeout=60, cwd=str(ROOT), env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "a C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS set" in res.stderr
    assert "httptools without llhttp" in res.stderr and "refusing to start" in res.stderr


def test_the_demo_on_a_port_in_use_names_it_and_leaves_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new user starting a second `killgate demo` (8080 taken by the first) got `cannot
    listen (None)`, then, depending on timing, a traceback, `Unclosed connector` errors or
    `snapshot_write_failed`, and a /tmp/killgate-demo-* folder left behind: the half-started
    gateway was never shut down."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        env = dict(os.environ, TMPDIR=str(tmp_path))
        # (forked from a process that imported the CLI: tests/cli_fork.py; the demo only
        # refuses, after the imports)
        res = cli_fork.run(["demo", "--port", str(port), "--admin-port", str(free_port())],
                           env, str(ROOT), 60)
    finally:
        taken.close()
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in res.stderr, out
    assert "try --port/--admin-port" in out, out
    for bad in ("(None)", "Traceback", "Unclosed", "snapshot_write_failed"):
        assert bad not in out, out
    assert list(tmp_path.glob("killgate-demo-*")) == []


def test_the_demo_with_a_short_secret_in_the_environment_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`KILLGATE_JWT_SECRET=changeme killgate demo` started the gateway, then died in a
    traceback minting the dev token, with `Unclosed client session` logging errors after it."""
    env = dict(os.environ, TMPDIR=str(tmp_path), KILLGATE_JWT_SECRET="changeme")
    # (forked from a process that imported the CLI: tests/cli_fork.py; it only refuses)
    res = cli_fork.run(["demo", "--port", str(free_port()), "--admin-port", str(free_port())],
                       env, str(ROOT), 60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "KILLGATE_JWT_SECRET is 8 bytes" in res.stderr, res.stderr
    assert "openssl rand -hex 32" in res.stderr and "changeme" not in res.stderr + res.stdout
    assert "Traceback" not in res.stderr and "Unclosed" not in res.stderr, res.stderr
    assert list(tmp_path.glob("killgate-demo-*")) == []


def test_the_demo_with_a_secret_that_is_not_text_says_so(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """`export KILLGATE_JWT_SECRET=$(head -c 32 /dev/urandom)` before `killgate demo` (as the
    quick start says to set one) ended in a UnicodeEncodeError traceback."""
    from gateway.cli.main import main

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("KILLGATE_JWT_SECRET", b"\xff\xfe".decode("utf-8", "surrogateescape") * 20)
    assert main(["demo", "--port", "0", "--admin-port", "0"]) == 1
    err = capsys.readouterr().err
    assert "KILLGATE_JWT_SECRET holds bytes that are not UTF-8" in err, err
    assert "openssl rand -hex 32" in err, err
    assert list(tmp_path.glob("killgate-demo-*")) == []


@pytest.mark.parametrize(("args", "says", "code"), [
    (["--port", "99999"], "argument --port: port 99999 is out of range 0-65535", 2),
    (["--admin-port", "-1"], "argument --admin-port: port -1 is out of range 0-65535", 2),
    (["--port", "8", "--admin-port", "8"], "--port and --admin-port must differ (both 8)", 1),
])
def test_the_demo_refuses_a_port_it_cannot_use_in_one_line(
        args: list[str], says: str, code: int, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """`killgate demo --port 99999` (or -1, or the admin port twice) ended in a traceback of
    the config it writes (`gateway.errors.ConfigError: listen: port 99999 ...`), naming a
    config file the user never wrote."""
    from gateway.cli.main import main

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("KILLGATE_JWT_SECRET", raising=False)
    try:
        got = main(["demo", *args])
    except SystemExit as exc:
        got = exc.code
    err = capsys.readouterr().err
    assert got == code, err
    assert says in err, err
    assert list(tmp_path.glob("killgate-demo-*")) == []


@contextlib.contextmanager
def demo_on_free_ports(tmp_path: Path) -> Iterator[str]:
    """`killgate demo --port 0 --admin-port 0` running, its output (to `demo.log`) once it
    has printed its instructions: yielded; stopped (SIGINT) on the way out."""
    log = tmp_path / "demo.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(tmp_path))
    env.pop("KILLGATE_JWT_SECRET", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", "0",
                                 "--admin-port", "0"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(ROOT), env=env, preexec_fn=die_with_parent)
    try:
        yield wait_until_sync(lambda: "/ui/" in log.read_text() and log.read_text(), 30, 0.05,
                              "the demo's instructions")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_the_demo_on_port_0_prints_the_ports_it_listens_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`--port 0 --admin-port 0` (any free ports) printed `http://127.0.0.1:0` in every
    address and command it gave."""
    with demo_on_free_ports(tmp_path) as text:
        assert "127.0.0.1:0" not in text, text
        admin = re.search(r"admin  (http://127\.0\.0\.1:\d+)", text)
        assert admin, text
        with urllib.request.urlopen(admin.group(1) + "/readyz", timeout=5) as r:
            assert r.status == 200
