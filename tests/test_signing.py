"""The state keys and the signed envelope (state/signing.py), without sockets."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from gateway.config import StateConfig
from gateway.errors import ConfigError
from gateway.state import signing
from gateway.state.signing import Key, Keyring, Unverified, audit_keyring, signing_keyring
from tests import cli_fork
from tests.conftest import ROOT

K1 = Key.of(b"k" * 32)
K2 = Key.of(b"q" * 32)


def test_seal_and_open_bind_kind_context_and_key() -> None:
    ring = Keyring(K1, context="kg")
    sealed = ring.seal(b"state", b'{"generation": 1}')
    assert sealed.startswith(f"KGS1 {K1.kid} ".encode())
    assert ring.open(b"state", sealed) == (b'{"generation": 1}', "current")
    for data, problem in ((b'{"generation": 1}', "no signature"),
                          (sealed.replace(b'1}', b'2}'), "does not match"),
                          (sealed.split(b"\n")[0], "malformed"),
                          (Keyring(K2, context="kg").seal(b"state", b"{}"), "unknown key id")):
        with pytest.raises(Unverified, match=problem):
            ring.open(b"state", data)
    with pytest.raises(Unverified):  # another kind of value
        ring.open(b"ack", sealed)
    with pytest.raises(Unverified):  # another deployment (prefix)
        Keyring(K1, context="other").open(b"state", sealed)
    assert "kkkk" not in repr(K1)  # the secret never prints


def test_rotation_accepts_the_previous_key_and_signs_with_the_current() -> None:
    old = Keyring(K1, context="kg").seal(b"state", b"{}")
    rotating = Keyring(K2, K1, context="kg")
    assert rotating.open(b"state", old)[1] == "previous"
    assert rotating.seal(b"state", b"{}").startswith(f"KGS1 {K2.kid} ".encode())
    with pytest.raises(Unverified):
        Keyring(K2, context="kg").open(b"state", old)  # the overlap is over


def test_a_mac_is_keyed_once_per_key_and_kind_and_is_hmac_sha256(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every instance verifies each pushed document: the key's HMAC state, fed the kind
    and context, is made once per (key, kind) and copied for each value (a pushed kill's
    verify: ~76k instructions, ~64k now). The MAC is still HMAC-SHA256 over kind, context
    and body, whatever was MACed before with the same ring. Fails without the copies."""
    keyed: list[bytes] = []
    real = getattr(signing, "_hmac_new", hmac.new)

    def counting(key: bytes, msg: bytes, digest: str) -> object:
        keyed.append(msg)
        return real(key, msg, digest)

    monkeypatch.setattr(signing, "_hmac_new", counting, raising=False)
    ring = Keyring(K2, K1, context="kg")
    other = ring.bound("kg2")
    for i in range(5):
        for r, key, kind in ((ring, K2, b"state"), (ring, K2, b"ack"), (ring, K1, b"state"),
                             (other, K2, b"state")):
            body = b'{"generation": %d}' % i
            want = hmac.new(key.secret, kind + b"\x00" + r.context + b"\x00" + body,
                            hashlib.sha256).hexdigest()
            assert r._mac(key, kind, body) == want
            assert r.check(kind, body, key.kid, want) == ("current" if key is K2 else "previous")
            with pytest.raises(Unverified, match="does not match"):
                r.check(kind, body + b" ", key.kid, want)
    assert sorted(keyed) == sorted([b"state\x00kg\x00", b"ack\x00kg\x00", b"state\x00kg\x00",
                                    b"state\x00kg2\x00"])


def test_without_a_key_nothing_is_signed_or_checked() -> None:
    ring = Keyring(None)
    assert ring.seal(b"state", b"{}") == b"{}"
    assert ring.open(b"state", b"{}") == (b"{}", "unkeyed")
    assert not ring.enabled


def test_keys_are_read_from_env_or_a_private_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KG_K", "x" * 40)
    cfg = StateConfig(backend="redis", signing_key_env="KG_K")
    ring = signing_keyring(cfg, Path)
    assert ring.current is not None and ring.current.secret == b"x" * 40
    assert audit_keyring(cfg, Path, ring) is ring  # the audit key defaults to it
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    public = tmp_path / "public"
    public.write_text("y" * 40)
    public.chmod(0o644)
    for c, where, problem in (
            (StateConfig(signing_key_env="KG_MISSING"), "state.signing_key_env", "is not set"),
            (StateConfig(signing_key_file=str(short)), "state.signing_key_file", "3 bytes"),
            (StateConfig(signing_key_file=str(public)), "state.signing_key_file", "chmod 600"),
            (StateConfig(signing_key_file=str(tmp_path / "nope")), "state.signing_key_file",
             "cannot read")):
        with pytest.raises(ConfigError) as e:
            signing_keyring(c, Path)
        assert e.value.problems[0].path == where and problem in e.value.problems[0].message
    public.chmod(0o600)
    monkeypatch.setenv("KG_A", "z" * 40)
    cfg = StateConfig(signing_key_file=str(public), audit_key_env="KG_A")
    assert audit_keyring(cfg, Path, signing_keyring(cfg, Path)).current == Key.of(b"z" * 40)


def test_check_explains_how_to_set_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "k.yaml"
    cfg.write_text("state: {backend: redis, signing_key_env: KG_UNSET_KEY}\nroutes:\n"
                   "  - {name: r, match: {path_prefix: /r}, stable: v1,\n"
                   "     versions: [{name: v1, url: 'http://127.0.0.1:1', weight: 1}]}\n")
    env = {k: v for k, v in os.environ.items() if k != "KG_UNSET_KEY"}
    res = cli_fork.run(["check", str(cfg)], env, str(ROOT), 30)  # (tests/cli_fork.py)
    assert res.returncode == 0, res.stderr
    assert "note: state.signing_key_env: the environment variable KG_UNSET_KEY is not set" \
        in res.stderr and "openssl rand -hex 32" in res.stderr
    cfg.write_text(cfg.read_text().replace("signing_key_env: KG_UNSET_KEY", "url: redis://h/0"))
    res = cli_fork.run(["check", str(cfg)], env, str(ROOT), 30)  # (tests/cli_fork.py)
    assert res.returncode == 1 and "state.signing_key_env: required with backend redis" \
        in res.stderr


def test_serve_refuses_to_start_without_its_key(tmp_path: Path) -> None:
    cfg = tmp_path / "k.yaml"
    cfg.write_text("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n"
                   "state: {backend: redis, url: 'redis://127.0.0.1:1/0', "
                   "signing_key_env: KG_UNSET_KEY}\nroutes:\n"
                   "  - {name: r, match: {path_prefix: /r}, stable: v1,\n"
                   "     versions: [{name: v1, url: 'http://127.0.0.1:1', weight: 1}]}\n")
    env = {k: v for k, v in os.environ.items() if k != "KG_UNSET_KEY"}
    res = cli_fork.run(["serve", "-c", str(cfg)], env, str(ROOT), 30)  # (it refuses)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "killgate: config: state.signing_key_env: the environment variable KG_UNSET_KEY " \
           "is not set" in res.stderr
