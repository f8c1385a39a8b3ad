"""admin/auth.py's Authorization headers whose token was verified, kept (impkill12): a
header seen before finds its token without `_token`'s shape checks, and every answer is
the one a fresh look at the header gives (the same principal, expired, refused, a token
never verified verified afresh)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from gateway.admin.auth import Authenticator
from gateway.config import AuthConfig
from gateway.errors import Unauthenticated
from tests.conftest import SECRET

pytestmark = pytest.mark.timeout(30)


def _token(t: int, exp: int, sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "scope": "killgate:kill", "iat": t, "exp": exp,
                       "iss": "killgate", "aud": "killgate-admin"}, SECRET, algorithm="HS256")


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch) -> tuple[Authenticator, list[float]]:
    monkeypatch.setenv("KILLGATE_JWT_SECRET", SECRET)
    now = [float(int(time.time()))]
    return Authenticator(AuthConfig(leeway="0s"), Path, clock=lambda: now[0]), now


def _plain(outcome: object) -> object:
    """A principal as what it grants; a refusal as it is."""
    return outcome if isinstance(outcome, tuple) else (
        outcome.subject, sorted(outcome.scopes))  # type: ignore[attr-defined]


async def _outcome(auth: Authenticator, header: str | None) -> object:
    try:
        return await auth.authenticate(header)
    except Unauthenticated as exc:
        return ("refused", exc.type, exc.message)


async def test_a_header_seen_before_answers_as_a_fresh_look(
        auth: tuple[Authenticator, list[float]], monkeypatch: pytest.MonkeyPatch) -> None:
    a, now = auth
    t = int(now[0])
    tok, other = _token(t, t + 600), _token(t, t + 5, "bob")
    headers = [f"Bearer {tok}", f"bearer   {tok} ", f"Bearer {other}", f"Basic {tok}",
               "Bearer a.b.c", f"Bearer {tok[:-2]}xx", None, ""]
    first = [await _outcome(a, h) for h in headers]
    assert first[0] is first[1] and first[0].subject == "alice"  # type: ignore[union-attr]
    shaped: list[str | None] = []
    real = a._token

    def counted(header: str | None) -> str:
        shaped.append(header)
        return real(header)
    monkeypatch.setattr(a, "_token", counted)
    again = [await _outcome(a, h) for h in headers]
    assert again == first
    # the headers whose token was verified through them found it without its shape
    # checks; the others (one that named a token verified through another header) not
    assert list(dict.fromkeys(shaped)) == [headers[1], *headers[3:]]  # (verify: again)
    now[0] = t + 10.0  # bob's token expired: still found, still refused as expired
    assert await _outcome(a, headers[2]) == ("refused", "expired",
                                            Unauthenticated("expired").message)
    fresh = Authenticator(AuthConfig(leeway="0s"), Path, clock=lambda: now[0])
    assert [_plain(await _outcome(a, h)) for h in headers] == [
        _plain(await _outcome(fresh, h)) for h in headers]

async def test_a_header_kept_is_bounded(auth: tuple[Authenticator, list[float]]) -> None:
    a, now = auth
    t = int(now[0])
    from gateway.admin import auth as auth_mod
    for i in range(auth_mod.VERIFIED_CACHE + 20):
        await a.authenticate(f"Bearer {_token(t, t + 600, f'u{i}')}")
    assert len(a._tokens) <= auth_mod.VERIFIED_CACHE
