"""A redis state.url none of whose parts is silently dropped (config review): `/abc` as the
database connected to db 0, and TLS options on a plain redis:// URL were ignored (the
connection unencrypted); `killgate check` said ok and `serve` ran. Both now refuse, naming
the part, never showing the password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config_redisurl import SSL_KEYS
from gateway.state import resp

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)
ROUTES = ("routes:\n  - name: iris\n    match: {path_prefix: /iris}\n    stable: v1\n"
          "    versions:\n      - {name: v1, url: 'http://127.0.0.1:1'}\n")


def _run(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(f"state:\n  backend: redis\n  url: '{url}'\n  signing_key_env: KG_K\n"
                   f"  snapshot_path: {tmp_path}/snap.json\n" + ROUTES)
    cfg.chmod(0o600)
    return subprocess.run([sys.executable, "-m", "gateway", *args, str(cfg)], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "KG_K": "k" * 40,
                               "KILLGATE_JWT_SECRET": "s" * 40})


@pytest.mark.parametrize(("url", "says"), [
    ("redis://:hunter2@127.0.0.1:6379/abc", "the path must be a database number"),
    ("redis://:hunter2@127.0.0.1:6379/0?ssl_cert_reqs=required", "'ssl_cert_reqs' is a TLS "
     "option: it needs a rediss:// URL"),
    ("unix://:hunter2@/run/redis.sock?db=1&ssl_ca_certs=/ca.pem", "needs a rediss:// URL"),
    ("redis://:hunter2@127.0.0.1:6379/0?db=one", "?db= must be a database number"),
    ("redis://:hunter2@127.0.0.1:6379/0?socket_timeout=5", "'socket_timeout' is not read"),
    ("redis+sentinel://:hunter2@10.0.0.1:26379/mymaster/zero", "after the service name"),
])
def test_check_refuses_a_url_part_the_store_would_drop(tmp_path: Path, url: str,
                                                        says: str) -> None:
    res = _run(tmp_path, url, "check")
    assert res.returncode == 1, res.stdout
    assert res.stderr.startswith("state.url: cannot be used: "), res.stderr
    assert says in res.stderr, res.stderr
    assert "hunter2" not in res.stderr + res.stdout


def test_serve_refuses_it_too(tmp_path: Path) -> None:
    res = _run(tmp_path, "redis://:hunter2@127.0.0.1:6379/abc", "serve", "-c")
    assert res.returncode == 1, res.stderr
    assert "state.url: cannot be used: the path must be a database number" in res.stderr
    assert "hunter2" not in res.stderr + res.stdout and "Traceback" not in res.stderr


@pytest.mark.parametrize("url", [
    "redis://10.0.0.9:6379/2", "redis://10.0.0.9:6379/", "redis://10.0.0.9",
    "rediss://h:6380/0?ssl_check_hostname=true&ssl_cert_reqs=required",
    "unix:///run/redis.sock?password=pw&db=1", "redis+sentinel://10.0.0.1:26379/mymaster/1"])
def test_urls_the_store_reads_whole_pass(tmp_path: Path, url: str) -> None:
    res = _run(tmp_path, url, "check")
    assert res.returncode == 0, res.stderr


def test_the_tls_options_are_the_stores() -> None:
    assert SSL_KEYS == resp._SSL_KEYS
