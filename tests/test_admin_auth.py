"""Admin authentication and authorization: a table of bad tokens, and scope x endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import ClientSession, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.admin.limiter import TokenBucket
from gateway.admin.tokens import mint
from gateway.domain.auditverify import verify_chain
from tests.backends import echo_app
from tests.conftest import SECRET, running_gateway, two_versions, wait_until, write_config

NOW = int(time.time())
ISS, AUD = "killgate", "killgate-admin"


def _b64(d: dict | bytes) -> str:
    raw = d if isinstance(d, bytes) else json.dumps(d).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**kw: object) -> dict[str, object]:
    now = int(time.time())  # not NOW: a token made late in the run is not old
    base: dict[str, object] = {"sub": "mallory", "scope": "killgate:admin", "iat": now,
                               "exp": now + 600, "iss": ISS, "aud": AUD}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def hs(c: dict[str, object], key: str | bytes = SECRET, alg: str = "HS256",
       headers: dict | None = None) -> str:
    return jwt.encode(c, key, algorithm=alg, headers=headers)


async def denied_events(g: object, action: str, attempts: int) -> list[dict]:
    """The audit trail's `action` events, once they stand for `attempts` attempts in all
    (denied calls are tallied, then written in the background)."""
    async def got() -> list[dict] | None:
        evs = [e for e in await g.gw.sync.store.audit_events()  # type: ignore[attr-defined]
               if e["action"] == action]
        return evs if sum(e["attempts"] for e in evs) >= attempts else None

    evs = await wait_until(got, 10, 0.05, f"{attempts} {action} attempts in the audit trail")
    assert sum(e["attempts"] for e in evs) == attempts
    return evs


def _deep(n: int) -> object:
    out: object = []
    for _ in range(n - 1):
        out = [out]
    return out


def unsigned(c: dict[str, object], alg: str) -> str:
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(c)}."


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def bad_tokens(rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    pub_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    good = hs(claims())
    head, body, sig = good.split(".")
    tampered = _b64(claims(scope="killgate:admin", sub="root"))
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "alg none": unsigned(claims(), "none"),
        "alg None": unsigned(claims(), "None"),
        "alg NONE": unsigned(claims(), "NONE"),
        "alg nOnE": unsigned(claims(), "nOnE"),
        "hs256 signed with an rsa public key": _hmac_raw(claims(), pub_pem),
        "rs256 by an unrelated key": jwt.encode(claims(), other_rsa, algorithm="RS256"),
        "es256 when only hs256 is allowed": jwt.encode(
            claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
        "signature stripped": f"{head}.{body}.",
        "signature altered": f"{head}.{body}.{sig[:-4]}AAAA",
        "payload tampered": f"{head}.{tampered}.{sig}",
        "wrong key": hs(claims(), "another-secret-that-is-32-bytes-long!!"),
        "expired": hs(claims(iat=NOW - 7200, exp=NOW - 3600)),
        "expired beyond leeway": hs(claims(iat=NOW - 600, exp=NOW - 31)),
        "no exp": hs(claims(exp=None)),
        "exp as a string": hs(claims(exp=str(NOW + 600))),
        "no iat": hs(claims(iat=None)),
        "no sub": hs(claims(sub=None)),
        "empty sub": hs(claims(sub="")),
        "nbf in the future": hs(claims(nbf=NOW + 3600)),
        "iat in the future": hs(claims(iat=NOW + 3600)),
        "wrong aud": hs(claims(aud="other")),
        "no aud": hs(claims(aud=None)),
        "wrong iss": hs(claims(iss="evil")),
        "iss prefix of the right one": hs(claims(iss="killgat")),
        "iss with the right one as prefix": hs(claims(iss="killgate-evil")),
        "crit header": hs(claims(), headers={"crit": ["x-foo"], "x-foo": 1}),
        # a validly signed token of another kind (RFC 8725 §3.11 explicit typing)
        "typ logout token": hs(claims(), headers={"typ": "logout+jwt"}),
        "typ not a string": hs(claims(), headers={"typ": ["JWT"]}),
        "validly signed, nested header": hs(claims(), headers={"x-nest": _deep(40)}),
        "kid path traversal": hs(claims(), "x" * 40, headers={"kid": "../../etc/passwd"}),
        "jku pointing home": hs(claims(), "y" * 40, headers={"jku": "http://127.0.0.1:1/"}),
        "nested header": f"{_b64(b'{' + b'[' * 100_000 + b']' * 100_000 + b'}')}.{body}.{sig}",
        "exp a century ahead": hs(claims(exp=NOW + 100 * 365 * 86400)),
        "exp NaN": hs(claims(exp=float("nan"))),
        "iat NaN": hs(claims(iat=float("nan"))),
        "exp infinite": hs(claims(exp=float("inf"))),
        "garbage": "not-a-token",
        "two segments": f"{head}.{body}",
        "five segments (JWE)": "a.b.c.d.e",
        "non-utf8 header": f"{base64.urlsafe_b64encode(bytes([0xff, 0xfe, 0x80])).decode()}"
                           f".{body}.{sig}",
        "padded base64": f"{head}==.{body}.{sig}",
        "empty hmac key": _hmac_raw(claims(), b""),
    }


def _hmac_raw(c: dict[str, object], key: bytes) -> str:
    import hashlib
    import hmac

    signing = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(c)}"
    sig = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(sig)}"


async def test_bad_tokens_are_401_never_5xx(tmp_path: Path, backends, session,
                                            rsa_key: rsa.RSAPrivateKey) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        g.gw.admin_api.callers.limiter = TokenBucket(1e9, 10**9)  # about answers, not rate limits
        async with session.get(g.admin + "/v1/status",
                               headers={"Authorization": f"Bearer {hs(claims())}"}) as r:
            assert r.status == 200  # the control
        results = {}
        for name, tok in bad_tokens(rsa_key).items():
            hdr = f"Bearer {tok}"
            # a forged X-Forwarded-For: the audit names the socket peer (row 32)
            async with session.post(g.admin + "/v1/kill", headers={"Authorization": hdr,
                                                                   "X-Forwarded-For": "6.6.6.6"},
                                    json={"scope": "global", "reason": name}) as r:
                body = await r.json()
                results[name] = (r.status, body["error"]["type"])
        # a header line the listener will not take (row 43: capped before any decoding)
        # is a 431; every other bad token a 401
        huge = {k for k, tok in bad_tokens(rsa_key).items() if len(tok) > 8000}
        assert huge == {"nested header"}
        assert {k: v for k, v in results.items() if k in huge} == {
            "nested header": (431, "headers_too_large")}
        results = {k: v for k, v in results.items() if k not in huge}
        assert {k: v for k, v in results.items() if v[0] != 401} == {}
        assert {t for _, t in results.values()} <= {"invalid_token", "expired"}
        assert g.gw.holder.doc.kills == {}
        assert g.gw.metrics.get("killgate_auth_failures_total", ("401",)) == len(results)
        # RELIABILITY row 41: audited as `authn_fail`, with the caller's address
        evs = await denied_events(g, "authn_fail", len(results))
        assert {(e["actor"], e["source"], e["target"]["method"], e["target"]["path"],
                 e["target"]["scope"]) for e in evs} == {
            ("anonymous", "127.0.0.1", "POST", "/v1/kill", "killgate:kill")}
        assert {e["reason"].split(":")[0] for e in evs} <= {"invalid_token", "expired"}
        assert verify_chain(await g.gw.sync.store.audit_events())[1] is None
        assert g.gw.holder.doc.kills == {}  # recording them changed nothing


ENDPOINTS = [
    ("GET", "/v1/status", None, "killgate:read"),
    ("GET", "/v1/audit", None, "killgate:read"),
    ("POST", "/v1/kill", {"scope": "route", "route": "iris", "reason": "t"}, "killgate:kill"),
    ("POST", "/v1/unkill", {"scope": "route", "route": "iris", "reason": "t"}, "killgate:kill"),
    ("PUT", "/v1/routes/iris/weights", {"weights": {"v1": 50, "v2": 50}, "reason": "t"},
     "killgate:rollout"),
    ("POST", "/v1/routes/iris/promote", {"version": "v2", "reason": "t"}, "killgate:rollout"),
    ("POST", "/v1/routes/iris/rollback", {"reason": "t"}, "killgate:rollout"),
    ("POST", "/v1/routes/iris/release", {"reason": "t"}, "killgate:rollout"),
]


async def test_scope_by_endpoint(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    scopes = ["killgate:read", "killgate:kill", "killgate:rollout"]
    async with running_gateway(cfg) as g:
        g.gw.admin_api.callers.limiter = TokenBucket(1e9, 10**9)
        async with ClientSession() as s:
            for method, path, body, needed in ENDPOINTS:
                for scope in scopes:
                    gen = g.gw.holder.doc.generation
                    tok = mint(SECRET, "t", scope, 600, ISS, AUD)
                    async with s.request(method, g.admin + path, json=body,
                                         headers={"Authorization": f"Bearer {tok}"}) as r:
                        if scope != needed:
                            assert r.status == 403, (method, path, scope)
                            assert g.gw.holder.doc.generation == gen  # nothing changed
                        else:
                            assert r.status in (200, 409), (method, path, scope, await r.text())
                tok = mint(SECRET, "t", "killgate:admin", 600, ISS, AUD)
                async with s.request(method, g.admin + path, json=body,
                                     headers={"Authorization": f"Bearer {tok}"}) as r:
                    assert r.status in (200, 409), (method, path, "admin", await r.text())
        # RELIABILITY row 45: every 403 audited as `authz_fail`, saying who and what
        evs = await denied_events(g, "authz_fail", len(ENDPOINTS) * (len(scopes) - 1))
        assert {(e["actor"], e["target"]["method"], e["target"]["path"], e["target"]["scope"])
                for e in evs} == {("t", m, p.replace("/iris/", "/{route}/"), needed)
                                  for m, p, _, needed in ENDPOINTS}  # as route patterns
        assert all(e["source"] == "127.0.0.1" and "lacks the scope" in e["reason"] for e in evs)


async def test_scp_claim_list_is_honoured(tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        tok = hs(claims(scope=None, scp=["killgate:read"]))
        async with session.get(g.admin + "/v1/status",
                               headers={"Authorization": f"Bearer {tok}"}) as r:
            assert r.status == 200
        # RFC 9068 access tokens (typ at+jwt) are access tokens too; and a long header (an
        # issuer that sends its certificate chain, `x5c`) is not mistaken for an attack
        for headers in ({"typ": "at+jwt"}, {"x5c": ["MIIC" + "A" * 2000, "MIID" + "B" * 1500]}):
            tok = hs(claims(), headers=headers)
            async with session.get(g.admin + "/v1/status",
                                   headers={"Authorization": f"Bearer {tok}"}) as r:
                assert r.status == 200, headers.keys()


async def test_public_key_and_jwks(tmp_path: Path, backends, session,
                                   rsa_key: rsa.RSAPrivateKey) -> None:
    p = await backends(echo_app("v1"))
    pem = tmp_path / "admin.pub.pem"
    pem.write_bytes(rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    extra_auth = "    algorithms: [RS256]\n    public_key_file: admin.pub.pem\n"
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace("    hs256_secret_env: KILLGATE_TEST_SECRET\n",
                                           extra_auth))
    good = jwt.encode(claims(), rsa_key, algorithm="RS256")
    async with running_gateway(cfg) as g:
        for tok, want in ((good, 200), (hs(claims()), 401),
                          (_hmac_raw(claims(), pem.read_bytes()), 401)):
            async with session.get(g.admin + "/v1/status",
                                   headers={"Authorization": f"Bearer {tok}"}) as r:
                assert r.status == want

    # JWKS: keys fetched once, unknown kids do not cause a refetch storm
    fetches = []
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")

    async def jwks(_: web.Request) -> web.Response:
        fetches.append(1)
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    jp = await backends(app)
    cfg.write_text(cfg.read_text().replace("    public_key_file: admin.pub.pem\n",
                                           f"    jwks_url: http://127.0.0.1:{jp}/jwks\n"))
    async with running_gateway(cfg) as g:
        ok = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
        async with session.get(g.admin + "/v1/status",
                               headers={"Authorization": f"Bearer {ok}"}) as r:
            assert r.status == 200
        for i in range(20):
            bad = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": f"x{i}"})
            async with session.get(g.admin + "/v1/status",
                                   headers={"Authorization": f"Bearer {bad}"}) as r:
                assert r.status == 401
        assert len(fetches) == 1


async def test_short_or_missing_secret_refuses_every_call(tmp_path: Path, backends, session,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    p = await backends(echo_app("v1"))
    monkeypatch.setenv("KILLGATE_TEST_SECRET", "too-short")
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        async with session.get(g.admin + "/v1/status",
                               headers={"Authorization": f"Bearer {hs(claims())}"}) as r:
            assert r.status == 503
            assert (await r.json())["error"]["type"] == "auth_not_configured"
        async with session.get(g.admin + "/healthz") as r:
            assert r.status == 200


async def test_jwks_rotation_and_outage(tmp_path: Path, backends, session,
                                        rsa_key: rsa.RSAPrivateKey) -> None:
    p = await backends(echo_app("v1"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict:
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        return {**d, "kid": kid, "use": "sig", "alg": "RS256"}

    served: dict[str, Any] = {"keys": [jwk(rsa_key, "k1"), jwk(other, "k2")], "up": True,
                              "failed": 0}

    async def jwks(_: web.Request) -> web.Response:
        if not served["up"]:
            served["failed"] += 1
            return web.json_response({}, status=500)
        return web.json_response({"keys": served["keys"]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    jp = await backends(app)
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        f"    algorithms: [RS256]\n    jwks_url: http://127.0.0.1:{jp}/jwks\n"
        "    jwks_refresh_interval: 1s\n"))

    def tok(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + jwt.encode(claims(), key, algorithm="RS256",
                                                        headers={"kid": kid})}

    async def code(h: dict[str, str]) -> int:
        async with session.get(g.admin + "/v1/status", headers=h) as r:
            return r.status

    async with running_gateway(cfg) as g:
        t1 = tok(rsa_key, "k1")
        assert await code(t1) == 200
        assert await code(t1) == 200  # now from the verified-token cache
        served["keys"] = [jwk(other, "k2")]  # k1 rotated out at the IdP
        # stops verifying after a refresh (every second), cached or not
        async def refused() -> bool:
            return await code(t1) == 401

        await wait_until(refused, 10, 0.05, what="k1 refused after the refresh")
        assert await code(tok(other, "k2")) == 200
        served["up"] = False  # the IdP is down: the last good set stays in use
        k2 = tok(other, "k2")

        async def verified_past_a_failed_refresh() -> bool:
            assert await code(k2) == 200  # (a request past the interval refetches)
            return bool(served["failed"] >= 2)

        await wait_until(verified_past_a_failed_refresh, 10, 0.1,
                         what="two failed refreshes")
        assert await code(k2) == 200


async def test_max_token_age(tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace("    hs256_secret_env: KILLGATE_TEST_SECRET\n",
                                           "    hs256_secret_env: KILLGATE_TEST_SECRET\n"
                                           "    max_token_age: 1m\n"))
    async with running_gateway(cfg) as g:
        old = hs(claims(iat=NOW - 120, exp=NOW + 600))
        async with session.get(g.admin + "/v1/status",
                               headers={"Authorization": f"Bearer {old}"}) as r:
            assert r.status == 401 and (await r.json())["error"]["type"] == "expired"
        async with session.get(g.admin + "/v1/status",
                               headers={"Authorization": f"Bearer {hs(claims())}"}) as r:
            assert r.status == 200


async def test_verified_token_cache_still_checks_time_and_key(monkeypatch) -> None:
    """A token verified once is not re-verified on every call, but a cached token still
    expires on time, and a different token (same claims, bad signature) is not a hit."""
    from gateway.admin.auth import Authenticator
    from gateway.config import AuthConfig
    from gateway.errors import Unauthenticated

    monkeypatch.setenv("KILLGATE_JWT_SECRET", SECRET)
    t = int(time.time())  # jwt.decode checks exp against the real clock
    now = [float(t)]
    auth = Authenticator(AuthConfig(leeway="0s"), Path, clock=lambda: now[0])
    tok = hs(claims(iat=t, exp=t + 60))
    assert (await auth.authenticate(f"Bearer {tok}")).subject == "mallory"
    assert tok in auth._verified
    calls = []

    def decode(*a: object, **k: object) -> dict:
        calls.append(1)
        raise jwt.InvalidSignatureError("bad")

    monkeypatch.setattr(jwt, "decode", decode)
    assert (await auth.authenticate(f"Bearer {tok}")).subject == "mallory"
    assert calls == []  # served from the cache: no second signature check
    head, body, sig = tok.split(".")
    forged = f"{head}.{body}.{sig[:-4]}AAAA"
    with pytest.raises(Unauthenticated):
        await auth.authenticate(f"Bearer {forged}")  # not a hit: verified (and refused)
    assert calls == [1]
    now[0] = t + 61.0  # past exp: the cached entry expires with the token
    with pytest.raises(Unauthenticated) as exc:
        await auth.authenticate(f"Bearer {tok}")
    assert exc.value.type == "expired" and tok not in auth._verified


async def jwks_config(tmp_path: Path, backends: Any, backend: int,
                      jwks: Callable[[web.Request], Awaitable[web.Response]]) -> Path:
    """A gateway config whose admin tokens are RS256, their keys served by `jwks` (at
    /jwks of a backend it starts), no HS256."""
    app = web.Application()
    app.router.add_get("/jwks", jwks)
    jwks_port = await backends(app)
    cfg = write_config(tmp_path, two_versions(backend, backend))
    cfg.write_text(cfg.read_text().replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        f"    algorithms: [RS256]\n    jwks_url: http://127.0.0.1:{jwks_port}/jwks\n"))
    return cfg


async def status_with_kid(session: ClientSession, admin: str, key: rsa.RSAPrivateKey,
                          kid: str) -> int:
    """GET /v1/status with a valid RS256 token naming `kid`: the answer's status."""
    tok = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": kid})
    async with session.get(admin + "/v1/status",
                           headers={"Authorization": f"Bearer {tok}"}) as r:
        return r.status


async def test_a_key_set_that_cannot_be_fetched_is_not_fetched_per_token(
        tmp_path: Path, backends, session, rsa_key: rsa.RSAPrivateKey) -> None:
    """While the gateway holds no key set (its IdP down since it started), tokens naming
    ever new `kid`s must not each cost a fetch: at most one is in flight, about one a
    second, and a valid token arriving meanwhile waits for that fetch, not for a new one."""
    p = await backends(echo_app("v1"))
    state = {"up": False, "fetches": 0, "inflight": 0, "most": 0}
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")

    async def jwks(_: web.Request) -> web.Response:
        state["fetches"] += 1
        state["inflight"] += 1
        state["most"] = max(state["most"], state["inflight"])
        try:
            await asyncio.sleep(0.05)  # a slow, failing IdP
            if not state["up"]:
                return web.json_response({}, status=503)
            return web.json_response({"keys": [jwk]})
        finally:
            state["inflight"] -= 1

    cfg = await jwks_config(tmp_path, backends, p, jwks)

    async def code(kid: str) -> int:
        return await status_with_kid(session, g.admin, rsa_key, kid)

    async with running_gateway(cfg) as g:
        codes = await asyncio.gather(*(code(f"x{i}") for i in range(60)))
        assert set(codes) == {401}
        assert state["most"] == 1 and state["fetches"] <= 3, state
        state["up"] = True

        async def accepted() -> bool:
            return await code("k1") == 200

        await wait_until(accepted, 10, 0.1, what="the key set fetched once the IdP is back")


async def test_tokens_waiting_for_a_slow_failing_fetch_do_not_each_fetch_again(
        tmp_path: Path, backends, session, rsa_key: rsa.RSAPrivateKey) -> None:
    """One fetch at a time (ac46156): a token whose kid is unknown waits for the fetch in
    flight. When that fetch took longer than the refetch floor (1 s while no set is held)
    and failed, each waiter, taking the lock in turn, found the last fetch "more than a
    second ago" (counted from its start) and fetched again: N waiting requests ran N
    fetches one after another, the last answered after N times the IdP's delay (its
    timeout is 5 s). A fetch that ended while a token waited is that token's fetch."""
    p = await backends(echo_app("v1"))
    state = {"fetches": 0}

    async def jwks(_: web.Request) -> web.Response:
        state["fetches"] += 1
        await asyncio.sleep(1.5)  # an IdP that fails slowly
        return web.json_response({}, status=503)

    cfg = await jwks_config(tmp_path, backends, p, jwks)

    async def code(kid: str) -> int:
        return await status_with_kid(session, g.admin, rsa_key, kid)

    async with running_gateway(cfg) as g:
        codes = await asyncio.gather(*(code(f"x{i}") for i in range(4)))
    assert set(codes) == {401}
    assert state["fetches"] == 1, state
