"""The keys that make the replicated state trustworthy, and the envelope they sign.

Owns the state signing keyring (`state.signing_key_env`/`_file`, plus the previous key
accepted during a rotation) and the audit keyring (`state.audit_key_env`/`_file`, default:
the signing keys), read once at startup from the environment or files, never from the
store. A signed value is `KGS1 <kid> <hmac-sha256 hex>\\n<body>`; the MAC covers a kind
(`state`, `ack`, `beat`, ...) and a context (the redis prefix) besides the body, so a
value cannot be replayed as another kind or into another deployment. Imports only the
standard library, config and errors.
"""

from __future__ import annotations

import hashlib
import hmac
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway import filemodes
from gateway.config import StateConfig
from gateway.errors import ConfigError, Problem

__all__ = [
    "CAUSES",
    "MIN_KEY_BYTES",
    "Cause",
    "Key",
    "Keyring",
    "Unverified",
    "audit_keyring",
    "cause_of",
    "key_id",
    "read_keys",
    "refuse_unreadable_keys",
    "signing_keyring",
]

MIN_KEY_BYTES = 32
MAGIC = b"KGS1 "
Which = Literal["current", "previous", "unkeyed"]


#: why a value was refused, strongest evidence of a forger first: a MAC that does not match
#: under a key we hold, no signature at all, a key id we do not hold (also a key changed or
#: mismatched), anything else (malformed, oversized, replayed, out of place); and apart,
#: not counted as tampering: a key id the fleet signed with before a rotation (`retired`:
#: retiredkeys.py), which genuine values written before it still name
Cause = Literal["bad_signature", "unsigned", "unknown_key_id", "other", "retired"]
CAUSES: tuple[Cause, ...] = ("bad_signature", "unsigned", "unknown_key_id", "other", "retired")


class Unverified(ValueError):
    """A value that is unsigned, signed with a key we do not hold, or altered: `cause`
    says which (its message is for people, and may be reworded)."""

    def __init__(self, message: str, cause: Cause = "other") -> None:
        super().__init__(message)
        self.cause: Cause = cause


def cause_of(exc: BaseException) -> Cause:
    """The cause of a refusal raised as `exc` ("other" for anything but Unverified)."""
    return exc.cause if isinstance(exc, Unverified) else "other"


def key_id(secret: bytes) -> str:
    """A short public name for a key (it reveals nothing usable about the key)."""
    return hmac.new(secret, b"killgate key id", hashlib.sha256).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Key:
    kid: str
    secret: bytes = b""

    @classmethod
    def of(cls, secret: bytes) -> Key:
        return cls(key_id(secret), secret)

    def __repr__(self) -> str:  # never print the secret
        return f"Key({self.kid})"


class Keyring:
    """Signs with the current key; verifies with the current or the previous one.

    With no key at all (a `local` store configured without one) values are neither
    signed nor checked: `seal` returns the body and `open` strips any envelope."""

    def __init__(self, current: Key | None, previous: Key | None = None,
                 context: str = "", retired: set[str] | None = None,
                 retired_since: dict[str, float] | None = None) -> None:
        self.current = current
        self.previous = previous if current is not None else None
        self.context = context.encode()
        self._by_kid = {k.kid: k for k in (previous, current) if k is not None}
        #: (secret, kind) -> an HMAC keyed with that secret and fed the kind and context:
        #: each MAC is a copy of it fed the body (`_mac`). Never updated itself; a few
        #: entries (two keys at most, a handful of kinds). By the secret, not the key id:
        #: two keys whose ids collide never share one
        self._fed: dict[tuple[bytes, bytes], hmac.HMAC] = {}
        #: key ids the fleet signed with before a rotation, as a holder of the current key
        #: recorded them (retiredkeys.py; shared by every keyring `bound` makes of this one)
        self.retired: set[str] = set() if retired is None else retired
        #: of those, when the fleet last retired each (the store's clock, unix seconds)
        self.retired_since: dict[str, float] = {} if retired_since is None else retired_since

    @property
    def enabled(self) -> bool:
        return self.current is not None

    def bound(self, context: str) -> Keyring:
        """The same keys, for values of another context (a redis prefix)."""
        return Keyring(self.current, self.previous, context, self.retired, self.retired_since)

    def holds(self, kid: str) -> bool:
        """Whether `kid` names the current or the previous key."""
        return kid in self._by_kid

    def keys(self) -> dict[str, bytes]:
        return {kid: k.secret for kid, k in self._by_kid.items()}

    def _mac(self, key: Key, kind: bytes, body: bytes) -> str:
        """HMAC-SHA256 of kind, NUL, context, NUL, body. From a copy of the HMAC fed the
        part before the body: a new one looks the digest up in OpenSSL, hashes the key's
        pads and copies the body after the prefix, every time (~11k instructions of the
        ~72k a 1.4 KB document's took, callgrind; a kill's committer signs one before its
        commit leaves, every receiver checks it)."""
        fed = self._fed.get((key.secret, kind))
        if fed is None:
            fed = hmac.new(key.secret, kind + b"\x00" + self.context + b"\x00", hashlib.sha256)
            self._fed[(key.secret, kind)] = fed
        h = fed.copy()
        h.update(body)
        return h.hexdigest()

    def sign(self, kind: bytes, body: bytes) -> tuple[str, str]:
        """(key id, MAC) of `body` with the current key."""
        assert self.current is not None
        return self.current.kid, self._mac(self.current, kind, body)

    def check(self, kind: bytes, body: bytes, kid: str, mac: str) -> Which:
        """Which key signed it; raises Unverified when none of ours did."""
        key = self._by_kid.get(kid)
        if key is None:
            if kid in self.retired:
                raise Unverified(f"signed with an unknown key id {kid!r}: one the fleet "
                                 "retired in a key rotation (written before it, or by an "
                                 "instance, or anyone, still holding that key)", "retired")
            raise Unverified(f"signed with an unknown key id {kid[:16]!r}", "unknown_key_id")
        # (compare_digest raises TypeError on a str that is not ASCII: compare bytes)
        if not hmac.compare_digest(self._mac(key, kind, body).encode(),
                                   mac.encode("utf-8", "replace")):
            raise Unverified("its signature does not match its content", "bad_signature")
        return "current" if key is self.current else "previous"

    def seal(self, kind: bytes, body: bytes) -> bytes:
        if self.current is None:
            return body
        kid, mac = self.sign(kind, body)
        return MAGIC + kid.encode() + b" " + mac.encode() + b"\n" + body

    def open(self, kind: bytes, data: bytes) -> tuple[bytes, Which]:
        """The body of a sealed value and which key signed it; raises Unverified."""
        if not data.startswith(MAGIC):
            if self.current is None:
                return data, "unkeyed"
            raise Unverified("it carries no signature", "unsigned")
        head, sep, body = data.partition(b"\n")
        parts = head.split(b" ")
        if not sep or len(parts) != 3:
            raise Unverified("its signature line is malformed")
        if self.current is None:
            return body, "unkeyed"
        return body, self.check(kind, body, parts[1].decode("ascii", "replace"),
                                parts[2].decode("ascii", "replace"))


# ---------------------------------------------------------------- reading keys


def _read_env(name: str, where: str, problems: list[Problem]) -> bytes | None:
    try:
        value = filemodes.key_env(name)
    except ValueError as exc:
        problems.append(Problem(where, str(exc)))
        return None
    if not value:
        problems.append(Problem(where, f"the environment variable {name} is not set; set it to "
                                       f"the same secret of at least {MIN_KEY_BYTES} bytes on "
                                       f"every instance, e.g. `export {name}=$(openssl rand "
                                       "-hex 32)`"))
        return None
    return value.encode()


def _read_file(path: Path, where: str, problems: list[Problem]) -> bytes | None:
    try:
        st = path.stat()
        data = filemodes.read_key_file(path).strip()
    except OSError as exc:
        problems.append(Problem(where, f"cannot read {path}: {exc.strerror or exc}"))
        return None
    if st.st_mode & (stat.S_IWGRP | stat.S_IRWXO):
        problems.append(Problem(where, f"{path} may be read or written by other users (mode "
                                       f"{stat.S_IMODE(st.st_mode):04o}); `chmod 600` it (on "
                                       "Kubernetes: defaultMode: 0400 on the secret volume)"))
        return None
    return data


def read_keys(env: str | None, file: str | None, where: str,
              resolve: Callable[[str], Path], problems: list[Problem],
              exact: bool = False) -> Key | None:
    """The key named by an `_env` / `_file` pair of settings, or None when neither is set.
    Problems are appended with their YAML path (`where` + `_env` or `_file`; `where`
    itself when `exact`)."""
    if env:
        path = where if exact else f"{where}_env"
        secret = _read_env(env, path, problems)
    elif file:
        path = where if exact else f"{where}_file"
        secret = _read_file(resolve(file), path, problems)
    else:
        return None
    if secret is None:
        return None
    if len(secret) < MIN_KEY_BYTES:
        problems.append(Problem(path, f"the key is {len(secret)} bytes; it must be at least "
                                      f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)"))
        return None
    return Key.of(secret)


def _pair(cfg: StateConfig, name: str,
          resolve: Callable[[str], Path]) -> tuple[Key | None, Key | None]:
    """The current and previous keys of `state.<name>_*` / `state.previous_<name>_*`
    (raises ConfigError naming the setting). The previous key must not be the current one:
    a rotation step done wrong (the old key, which the fleet may still sign with, would not
    be accepted at all)."""
    problems: list[Problem] = []
    current = read_keys(getattr(cfg, f"{name}_env"), getattr(cfg, f"{name}_file"),
                        f"state.{name}", resolve, problems)
    prev_env = getattr(cfg, f"previous_{name}_env")
    previous = read_keys(prev_env, getattr(cfg, f"previous_{name}_file"),
                         f"state.previous_{name}", resolve, problems)
    if current is not None and previous is not None and previous.kid == current.kid:
        problems.append(Problem(f"state.previous_{name}_" + ("env" if prev_env else "file"),
                                f"the same key as state.{name}: during a rotation it must "
                                "name the old key (remove it once the rotation is done)"))
    if problems:
        raise ConfigError(problems)
    return current, previous


def signing_keyring(cfg: StateConfig, resolve: Callable[[str], Path]) -> Keyring:
    """The state keys from the config (raises ConfigError naming the setting)."""
    current, previous = _pair(cfg, "signing_key", resolve)
    return Keyring(current, previous, cfg.prefix if cfg.backend == "redis" else "local")


def audit_keyring(cfg: StateConfig, resolve: Callable[[str], Path],
                  signing: Keyring) -> Keyring:
    """The audit MAC keys: `audit_key_*` when set, else the signing keys."""
    current, previous = _pair(cfg, "audit_key", resolve)
    if current is None:
        return signing
    return Keyring(current, previous)


def check_keys(cfg: StateConfig,
               resolve: Callable[[str], Path]) -> tuple[list[Problem], list[Problem]]:
    """For `killgate check`: (errors, notes). A key named by an environment variable that
    is not set here is a note (the deployment sets it); a bad key file is an error, and so is
    a redis `state.url` the store could never connect with (a port that is not a number, an
    unknown TLS option, a sentinel URL without its service)."""
    url = _url_problems(cfg)
    try:
        audit_keyring(cfg, resolve, signing_keyring(cfg, resolve))
    except ConfigError as exc:
        notes = [p for p in exc.problems if p.path.endswith("_env") and "is not set" in p.message]
        return url + [p for p in exc.problems if p not in notes], notes
    return url, []


def _url_problems(cfg: StateConfig) -> list[Problem]:
    if cfg.backend != "redis":
        return []
    from gateway.config_redisurl import unreadable
    from gateway.state.respurl import parse_endpoint

    try:
        parse_endpoint(cfg.url)
    except (ValueError, OSError) as exc:
        msg = unreadable(cfg.url, exc)
        return [Problem("state.url", f"cannot be used: {msg} (the store would never connect: "
                                     "every route would answer 503 state_unknown)")]
    return []


def refuse_unreadable_keys(cfg: StateConfig, resolve: Callable[[str], Path]) -> None:
    """For a reload whose `state` section changed: it applies at a restart only, but a
    restarted worker of the group starts on what a reload put live, so keys that cannot be
    read here (`check_keys`' errors and notes alike) refuse the reload (ConfigError)."""
    errors, notes = check_keys(cfg, resolve)
    if errors or notes:
        raise ConfigError([Problem(p.path, f"{p.message}; a worker could not start on this "
                                           "file: the running config stays in force")
                           for p in errors + notes])
