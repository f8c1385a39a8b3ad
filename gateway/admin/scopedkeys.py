"""The admin API's scoped keys (`admin.auth.scoped_keys`): HS256 secrets whose tokens may
carry only some scopes.

Owns reading their secrets and the rule that binds a token to its key: a token names its
key in `kid` and is checked with that key alone (never with one key after another, so a
token signed with a scoped secret never passes as the main key's); one that claims a scope
its key may not grant is refused whole (403), never narrowed. A key whose secret is
missing, short or another key's is refused on its own (503 naming it); the main key and
the other scoped keys go on working. Imports no pyjwt (admin/auth.py verifies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway import filemodes
from gateway.config_admin import ScopedKeyConfig
from gateway.errors import ApiError

__all__ = ["SCOPED_ACTOR", "ScopeBeyondKey", "ScopedKey", "check_scoped_keys", "load_scoped_keys",
           "read_secret"]

MIN_SECRET = 32
SCOPED_ACTOR = "key:"  # a scoped key's tokens act as `key:<name>/<sub>`


class ScopeBeyondKey(ApiError):
    """A token claims scopes its key may not grant: refused, whatever it calls."""

    def __init__(self, subject: str, key: str, beyond: Iterable[str]) -> None:
        super().__init__(403, "forbidden",
                         f"the token claims {' '.join(sorted(beyond))}, which its key "
                         f"{key!r} may not grant (admin.auth.scoped_keys): mint it with "
                         "only the key's scopes")
        self.subject = subject


@dataclass(frozen=True, slots=True)
class ScopedKey:
    name: str
    secret: str = field(repr=False)  # "" when `problem`; never in a repr (a log line)
    max_scopes: frozenset[str]
    problem: str | None = None
    #: the problem as a caller is told it: a file's path is the gateway host's business
    #: (the log and `killgate check` name it), not that of whoever reaches the admin port
    said: str | None = None

    def check(self, subject: str, scopes: frozenset[str]) -> None:
        if beyond := scopes - self.max_scopes:
            raise ScopeBeyondKey(subject, self.name, beyond)

    def actor(self, subject: str) -> str:
        """The subject as every audit event, log line and approval shows it: the key
        first (a holder of this key can mint any `sub`, so the trail says which key
        vouches for it, and a long subject cut at 256 characters keeps it)."""
        return f"{SCOPED_ACTOR}{self.name}/{subject}"


def read_secret(cfg: ScopedKeyConfig, resolve: Callable[[str], Path]) -> tuple[str, str]:
    """(the secret, where it comes from); OSError or ValueError when it cannot be read.
    '' when the variable is unset."""
    if cfg.hs256_secret_file is not None:
        path = resolve(cfg.hs256_secret_file)
        try:
            secret = filemodes.read_key_file(path).decode().strip()
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text (a secret is)") from None
        if (bad := filemodes.problem(path, secret=True)) is not None:
            raise ValueError(bad)
        return secret, f"the file {cfg.hs256_secret_file}"
    assert cfg.hs256_secret_env is not None
    return filemodes.key_env(cfg.hs256_secret_env), \
        f"the environment variable {cfg.hs256_secret_env}"


def load_scoped_keys(cfgs: list[ScopedKeyConfig], resolve: Callable[[str], Path],
                     main_secret: str | None) -> dict[str, ScopedKey]:
    """Each key by name, with its problem (if any) said so that the fix is plain."""
    keys: dict[str, ScopedKey] = {}
    seen: dict[str, str] = {} if not main_secret else {main_secret: "the main key (admin.auth)"}
    for i, cfg in enumerate(cfgs):
        where = f"admin.auth.scoped_keys[{i}] ({cfg.name})"
        problem = None
        secret = ""
        try:
            secret, source = read_secret(cfg, resolve)
        except (OSError, ValueError) as exc:
            problem = f"{where}: {exc}"
        else:
            if not secret:
                problem = (f"{where}: no secret: set {source.rsplit(' ', 1)[-1]} (>= "
                           f"{MIN_SECRET} bytes, e.g. `openssl rand -hex 32`)")
            elif len(secret.encode()) < MIN_SECRET:
                problem = f"{where}: the secret in {source} is shorter than {MIN_SECRET} bytes"
            elif "-----BEGIN" in secret:  # (a public key is no secret: anyone could sign)
                problem = (f"{where}: {source} holds a PEM key; give a random secret "
                           "(`openssl rand -hex 32`)")
            elif secret in seen:
                problem = (f"{where}: its secret is also {seen[secret]}'s: whoever holds it "
                           "could mint that key's tokens; give each key its own secret")
            else:
                seen[secret] = f"scoped key {cfg.name!r}"
        said = problem
        if problem is not None and cfg.hs256_secret_file is not None:
            said = (f"{where}: its secret file (hs256_secret_file) cannot be used; the "
                    "gateway's log (admin_auth_not_configured) and `killgate check` on its "
                    "host say why")
        keys[cfg.name] = ScopedKey(cfg.name, "" if problem else secret,
                                   frozenset(cfg.max_scopes), problem, said)
    return keys


def check_scoped_keys(keys: dict[str, ScopedKey], cfgs: list[ScopedKeyConfig],
                      environ: dict[str, str]) -> tuple[list[str], list[str]]:
    """(errors, notes) for `killgate check`: a variable not set where check runs is the
    deployment's business (a note); a short, unreadable or shared secret is an error."""
    errors: list[str] = []
    notes: list[str] = []
    for cfg in cfgs:
        problem = keys[cfg.name].problem
        if problem is None:
            continue
        if cfg.hs256_secret_env is not None and not environ.get(cfg.hs256_secret_env):
            notes.append(f"{problem}; until then the gateway answers this key's tokens 503")
        else:
            errors.append(problem)
    return errors, notes
