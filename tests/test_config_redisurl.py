"""A redis state.url none of whose parts is silently dropped (config review): `/abc` as the
database connected to db 0, and TLS options on a plain redis:// URL were ignored (the
connection unencrypted); `killgate check` said ok and `serve` ran. Both now refuse, naming
the part, never showing the password."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.config_redisurl import SSL_KEYS
from gateway.state import respurl
from tests import cli_fork

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)
ROUTES = ("routes:\n  - name: iris\n    match: {path_prefix: /iris}\n    stable: v1\n"
          "    versions:\n      - {name: v1, url: 'http://127.0.0.1:1'}\n")


def _run(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(f"state:\n  backend: redis\n  url: '{url}'\n  signing_key_env: KG_K\n"
                   f"  snapshot_path: {tmp_path}/snap.json\n" + ROUTES)
    cfg.chmod(0o600)
    # (forked from a process that imported the CLI: tests/cli_fork.py; `serve` only refuses)
    return cli_fork.run([*args, str(cfg)], {"PATH": "/usr/bin:/bin", "KG_K": "k" * 40,
                                            "KILLGATE_JWT_SECRET": "s" * 40}, str(ROOT), 30)


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
    assert SSL_KEYS == respurl._SSL_KEYS


# a user name or password holding '/', '?' or '#' unencoded (base64 makes '/') ends the host
# early: urllib reads its start as the host or port, and the parser's message ('Port could not
# be cast to integer value as ...') quoted it (impsmall). No message quotes any of it now.
SECRET_PARTS = ("hunter", "s3cr3t")
SPLIT_URLS = [t.format(pw=f"hunter{c}s3cr3t") for c in "/?#" for t in (
    "redis://:{pw}@127.0.0.1:6379/0", "redis://ops:{pw}@127.0.0.1:6379/0",
    "rediss://:{pw}@h:6380/0", "unix://:{pw}@/run/redis.sock",
    "redis+sentinel://:{pw}@10.0.0.1:26379,10.0.0.2:26379/mymaster/0")] + [
    "redis://:hunter/s3cr3t?x=1#y@127.0.0.1:6379/0", "redis://hunter/s3cr3t:pw@h:1/0",
    "redis://:hunter?s3cr3t=1@127.0.0.1:6379/0", "unix://:hunter#s3cr3t@/run/redis.sock?db=1"]


def _problems(tmp_path: Path, url: str) -> list[str]:
    """What `killgate check` says of a state.url: the config's load, then the store's parser."""
    from gateway.configfile import load_config
    from gateway.errors import ConfigError
    from gateway.state.signing import check_keys

    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(f"state:\n  backend: redis\n  url: '{url}'\n  signing_key_env: KG_K\n"
                   f"  snapshot_path: {tmp_path}/snap.json\n" + ROUTES)
    try:
        loaded = load_config(cfg)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    errors, notes = check_keys(loaded.config.state, loaded.resolve)
    return [str(p) for p in errors + notes if p.path == "state.url"]


@pytest.mark.parametrize("url", SPLIT_URLS)
def test_a_password_holding_slash_question_or_hash_is_refused_unquoted(tmp_path: Path,
                                                                       url: str) -> None:
    said = " ".join(_problems(tmp_path, url))
    assert "state.url: cannot be used: a user name or password in it holds '/', '?' or '#' " \
           "unencoded" in said, said
    assert "percent-encode it" in said
    assert not any(part in said for part in SECRET_PARTS), said


@pytest.mark.parametrize("url", [
    "redis://:hunter@s3cr3t@127.0.0.1:6379/0", "redis://ops:hunter@s3cr3t@h:6379/0",
    "redis+sentinel://:hunter@s3cr3t@10.0.0.1:26379/mymaster/0",
    "unix:///run/redis.sock?password=hunter@s3cr3t&db=1",
    "redis://:hunter%2Fs3cr3t%3F%23@127.0.0.1:6379/0"])
def test_a_password_holding_an_at_or_percent_encoded_is_read_whole(tmp_path: Path,
                                                                   url: str) -> None:
    assert _problems(tmp_path, url) == []


@pytest.mark.parametrize("url", [
    "redis://:hunter@s3cr3t@127.0.0.1:notaport/0",     # the parser quotes the port only
    "redis+sentinel://:hunter@s3cr3t@10.0.0.1:26x79/mymaster",
    "redis://:hunter@s3cr3t@127.0.0.1:6379/0?ssl_nonsense=1",
    "redis://:hunter?password=s3cr3t@127.0.0.1:6379/0",  # an '@' in an option read as text
    "redis://:hunter[s3cr3t/x@127.0.0.1:6379/0",  # (urllib cannot split it at all)
])
def test_the_store_parsers_refusal_never_quotes_the_password(tmp_path: Path, url: str) -> None:
    said = " ".join(_problems(tmp_path, url))
    assert said.startswith("state.url: cannot be used"), said
    assert not any(part in said for part in SECRET_PARTS), said


@pytest.mark.parametrize("url", [*SPLIT_URLS, "redis://:hunter?password=s3cr3t@127.0.0.1:6379/0",
                                 "redis://:hunter[s3cr3t/x@127.0.0.1:6379/0"])
def test_the_running_store_says_it_without_the_password_too(url: str) -> None:
    """The store's own refusal (state/redislink, shown in /v1/status and the log as
    `state.url cannot be used`), for a URL that reached it without the config's check."""
    from gateway.errors import StoreUnavailable
    from gateway.state.redislink import RedisLink
    from gateway.state.signing import Keyring

    link = RedisLink(url, "kg", 1.0, keys=Keyring(None))
    try:
        link._ep()
    except StoreUnavailable as exc:
        said = str(exc)
        assert said.startswith("state.url cannot be used: "), said
        assert not any(part in said for part in SECRET_PARTS), said
    else:  # (parsed: then nothing of it is said, but it must not be the password's host)
        assert not any(part in (link._ep().host or "") for part in SECRET_PARTS), url


@pytest.mark.parametrize("how", ["check", "serve"])
def test_check_and_serve_never_print_a_split_password(tmp_path: Path, how: str) -> None:
    res = _run(tmp_path, "redis://:hunter#s3cr3t@127.0.0.1:6379/0",
               *(["check"] if how == "check" else ["serve", "-c"]))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "state.url: cannot be used: a user name or password" in res.stderr, res.stderr
    assert not any(part in res.stdout + res.stderr for part in SECRET_PARTS), res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("url", ["redis://:hunter2@redis\u200b.svc:6379/0",
                                 "rediss://redis.svc\u00a0:6380/0",
                                 "redis+sentinel://:hunter2@s1:26379,sé2:26379/mymaster/0"])
def test_a_host_with_a_character_no_resolver_reads_is_refused(url: str) -> None:
    """A zero-width space (or any character outside printable ASCII) pasted into the host:
    `check` said ok, and the store never connected (every route 503 state_unknown)."""
    from gateway.config_redisurl import redis_url_problem

    said = redis_url_problem(url) or ""
    assert said.startswith("its host holds the character U+"), said
    assert "hunter2" not in said
    assert redis_url_problem("redis://:hünter2@redis.svc:6379/0") is None  # (a password may)
