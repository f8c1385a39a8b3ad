"""Scoped admin keys (`admin.auth.scoped_keys`): a secret whose tokens may carry only some
scopes, so that a drill CronJob's Secret cannot mint an admin token.

Against a real `killgate serve` on a real redis-server: tokens from each key (minted by
`killgate token --key`), the refusals (a scope beyond the key, a token claiming more than
its key grants, a kid that selects the wrong key, alg and kid tricks), the audit trail
naming the key, and `killgate check`'s errors.
"""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
from pathlib import Path

import jwt
import pytest
from aiohttp import ClientSession

from gateway.admin.tokens import mint
from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import ROOT, SECRET, free_port, two_versions, wait_until, write_config
from tests.redisha import redis_state_yaml

pytestmark = pytest.mark.timeout(90)

DRILL_SECRET = "drill-secret-0123456789-abcdefghijklmnop-0123456789-abcdefghijklmno"
KILLER_SECRET = "killer-secret-0123456789-abcdefghijklmnop"
ISS, AUD = "killgate", "killgate-admin"
SCOPED = textwrap.dedent("""\
    scoped_keys:
      - name: drills
        hs256_secret_env: KILLGATE_TEST_DRILL_SECRET
        max_scopes: [killgate:drill, killgate:read]
      - name: killer
        hs256_secret_file: killer.secret
        max_scopes: [killgate:kill, killgate:read]
    """)


def _config(tmp_path: Path, routes: str, state: str | None = None,
            scoped: str = SCOPED) -> Path:
    cfg = write_config(tmp_path, routes, state=state, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    cfg.write_text(cfg.read_text().replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n" + textwrap.indent(scoped, "    ")))
    secret = tmp_path / "killer.secret"
    secret.write_text(KILLER_SECRET + "\n")
    secret.chmod(0o600)
    return cfg


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    e = {**os.environ, **(env or {})}
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    return cli_fork.run(list(args), e, str(ROOT), 30)


def _token(cfg: Path, key: str, scope: str, sub: str = "cron/drill") -> str:
    got = _cli("token", "-c", str(cfg), "--key", key, "--subject", sub, "--scope", scope,
               "--ttl", "5m")
    assert got.returncode == 0, got.stderr
    return got.stdout.strip()


def _signed(secret: str, scope: str, sub: str = "mallory", **head: object) -> str:
    import time

    now = int(time.time())
    claims = {"sub": sub, "scope": scope, "iat": now, "exp": now + 300, "iss": ISS, "aud": AUD}
    alg = str(head.pop("alg", "HS256"))
    return jwt.encode(claims, secret, algorithm=alg, headers=head or None)


async def _call(s: ClientSession, method: str, url: str, token: str,
                body: dict | None = None) -> tuple[int, dict]:
    async with s.request(method, url, json=body,
                         headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None)


KILL = {"scope": "route", "route": "iris", "reason": "scoped key test"}


async def test_each_key_within_its_scopes_and_every_way_around_them_refused(
        tmp_path: Path, backends, gateway_procs, redis_server,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILLGATE_TEST_DRILL_SECRET", DRILL_SECRET)
    p = await backends(echo_app("v1"))
    state = redis_state_yaml(redis_server.url, f"{tmp_path}/snap.json", prefix="kgscoped",
                             signing_key_env="KILLGATE_TEST_STATE_KEY")
    cfg = _config(tmp_path, two_versions(p, p), state=state)
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    admin = gw.admin
    drills_read = await asyncio.to_thread(_token, cfg, "drills", "killgate:read killgate:drill")
    killer = await asyncio.to_thread(_token, cfg, "killer", "killgate:kill", "bot")
    assert jwt.get_unverified_header(drills_read)["kid"] == "drills"
    main_admin = mint(SECRET, "alice", "killgate:admin", 300, ISS, AUD)
    async with ClientSession() as s:
        status, _ = await _call(s, "GET", admin + "/v1/status", drills_read)
        assert status == 200
        # a scope the key may grant but the token lacks, and one the key may not grant
        status, body = await _call(s, "POST", admin + "/v1/kill", drills_read, KILL)
        assert status == 403, body
        # a token claiming more than its key grants is refused whole, even for a read
        for scope in ("killgate:read killgate:kill", "killgate:admin", "killgate:breakglass"):
            over = _signed(DRILL_SECRET, scope, kid="drills")
            status, body = await _call(s, "GET", admin + "/v1/status", over)
            assert status == 403, (scope, body)
            assert "'drills' may not grant" in body["error"]["message"]
            assert DRILL_SECRET not in str(body)
        # the kid selects one key; no key is tried after another
        for name, tok in {
            "main key's token naming the drills key": _signed(SECRET, "killgate:admin",
                                                              kid="drills"),
            "drills-signed, no kid (as the main key's)": _signed(DRILL_SECRET, "killgate:read"),
            "drills-signed, kid naming no key": _signed(DRILL_SECRET, "killgate:read",
                                                        kid="main"),
            "drills-signed, kid with path characters": _signed(
                DRILL_SECRET, "killgate:read", kid="../drills"),
            "drills-signed, kid as a list": _raw({"alg": "HS256", "kid": ["drills"]},
                                                 DRILL_SECRET),
            "drills key with HS512": _signed(DRILL_SECRET, "killgate:read", kid="drills",
                                             alg="HS512"),
            "killer-signed, kid drills": _signed(KILLER_SECRET, "killgate:read",
                                                 kid="drills"),
            "alg none, kid drills": _none_token("drills"),
        }.items():
            status, _ = await _call(s, "GET", admin + "/v1/status", tok)
            assert status == 401, name
        # the same subject under both keys: each token keeps its own key's scopes
        drills_alice = _signed(DRILL_SECRET, "killgate:read", sub="alice", kid="drills")
        assert (await _call(s, "GET", admin + "/v1/status", drills_alice))[0] == 200
        assert (await _call(s, "GET", admin + "/v1/status", main_admin))[0] == 200
        assert (await _call(s, "POST", admin + "/v1/kill", drills_alice, KILL))[0] == 403
        status, st = await _call(s, "GET", admin + "/v1/status", main_admin)
        assert st["kills"] == []  # nothing the refused calls asked for was done
        # a key allowed to kill does; the trail says which key vouched for the subject
        status, body = await _call(s, "POST", admin + "/v1/kill", killer, KILL)
        assert status == 200, body

        async def events() -> list[dict] | None:
            _, got = await _call(s, "GET", admin + "/v1/audit?limit=100", main_admin)
            evs = got["events"]
            fails = [e for e in evs if e["action"] == "authz_fail"]
            return evs if sum(e.get("attempts", 1) for e in fails) >= 5 else None

        evs = await wait_until(events, 15, 0.1, "the refusals in the audit trail")
    kills = [e for e in evs if e["action"] == "kill"]
    assert [e["actor"] for e in kills] == ["key:killer/bot"]
    fails = {e["actor"] for e in evs if e["action"] == "authz_fail"}
    assert fails == {"key:drills/cron/drill", "key:drills/mallory", "key:drills/alice"}
    out = gw.output()
    assert "Traceback" not in out
    assert DRILL_SECRET not in out and KILLER_SECRET not in out
    assert gw.stop() == 0, out


def _raw(head: dict, secret: str) -> str:
    """A token with any header pyjwt would refuse to make (a kid that is not a string)."""
    import base64
    import hashlib
    import hmac
    import json
    import time

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    signing = (b64(json.dumps(head).encode()) + "." + b64(json.dumps(
        {"sub": "x", "scope": "killgate:read", "iat": now, "exp": now + 60, "iss": ISS,
         "aud": AUD}).encode()))
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(sig)


def _none_token(kid: str) -> str:
    import base64
    import json
    import time

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return (b64({"alg": "none", "kid": kid}) + "."
            + b64({"sub": "x", "scope": "killgate:read", "iat": now, "exp": now + 60,
                   "iss": ISS, "aud": AUD}) + ".")


async def test_a_scoped_key_without_its_secret_fails_alone(
        tmp_path: Path, backends, gateway_procs, monkeypatch: pytest.MonkeyPatch) -> None:
    """The drills key's variable is not set where the gateway runs: its tokens get a 503
    naming the key and the fix; the main key and the other scoped key go on working."""
    monkeypatch.delenv("KILLGATE_TEST_DRILL_SECRET", raising=False)
    p = await backends(echo_app("v1"))
    cfg = _config(tmp_path, two_versions(p, p))
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    async with ClientSession() as s:
        status, body = await _call(s, "GET", gw.admin + "/v1/status",
                                   _signed(DRILL_SECRET, "killgate:read", kid="drills"))
        assert status == 503
        assert "scoped_keys[0] (drills)" in body["error"]["message"]
        assert "KILLGATE_TEST_DRILL_SECRET" in body["error"]["message"]
        for tok in (mint(SECRET, "alice", "killgate:read", 60, ISS, AUD),
                    mint(KILLER_SECRET, "bot", "killgate:read", 60, ISS, AUD, "killer")):
            assert (await _call(s, "GET", gw.admin + "/v1/status", tok))[0] == 200
    out = gw.output()
    assert "admin_auth_not_configured" in out and 'key_name="drills"' in out, out
    assert gw.stop() == 0, out


def test_token_key_refuses_what_the_gateway_would(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILLGATE_TEST_DRILL_SECRET", DRILL_SECRET)
    cfg = _config(tmp_path, two_versions(1, 2))
    base = ("token", "-c", str(cfg), "--subject", "cron", "--ttl", "5m")
    for args, says in (
        (("--key", "nope", "--scope", "killgate:read"), "no such key"),
        (("--key", "drills", "--scope", "killgate:kill"), "may grant only killgate:drill"),
    ):
        got = _cli(*base, *args)
        assert got.returncode == 1 and says in got.stderr, got.stderr
        assert got.stdout == ""
    got = _cli("token", "--key", "drills", "--subject", "cron", "--scope", "killgate:read")
    assert got.returncode != 0 and "--key NAME needs -c FILE" in got.stderr
    got = _cli(*base, "--key", "killer", "--scope", "killgate:kill")
    assert got.returncode == 0
    tok = got.stdout.strip()
    assert jwt.decode(tok, KILLER_SECRET, algorithms=["HS256"], audience=AUD)["sub"] == "cron"
    assert KILLER_SECRET not in got.stdout + got.stderr


@pytest.mark.parametrize(("scoped", "env", "says"), [
    ("- {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:drill]}\n- {name: drills, hs256_secret_file: killer.secret, max_scopes: "
     "[killgate:read]}\n", DRILL_SECRET,
     "admin.auth.scoped_keys: [1].name: 'drills' is used by another key"),
    ("- {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:admin]}\n", DRILL_SECRET,
     "admin.auth.scoped_keys[0].max_scopes: [0] killgate:admin cannot be given"),
    ("- {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:kill, killgate:breakglass]}\n", DRILL_SECRET,
     "admin.auth.scoped_keys[0].max_scopes: [1] killgate:breakglass cannot be given"),
    ("- {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:drills]}\n", DRILL_SECRET, "[0] unknown scope 'killgate:drills'"),
    ("- {name: ../x, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:drill]}\n", DRILL_SECRET, "admin.auth.scoped_keys[0].name"),
    ("- {name: drills, max_scopes: [killgate:drill]}\n", DRILL_SECRET,
     "give exactly one of hs256_secret_env and hs256_secret_file"),
    ("- {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:drill]}\n", "short",
     "admin.auth.scoped_keys[0] (drills): the secret in the environment variable "
     "KILLGATE_TEST_DRILL_SECRET is shorter than 32 bytes"),
    ("- {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:drill]}\n", SECRET, "its secret is also the main key (admin.auth)'s"),
    ("- {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:drill]}\n", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"
     "\n-----END PUBLIC KEY-----", "KILLGATE_TEST_DRILL_SECRET holds a PEM key"),
    ("- {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL_SECRET, max_scopes: "
     "[killgate:drill]}\n- {name: other, hs256_secret_file: killer.secret, max_scopes: "
     "[killgate:read]}\n", KILLER_SECRET, "scoped_keys[1] (other): its secret is also "
     "scoped key 'drills''s"),
])
def test_check_names_each_mistake(tmp_path: Path, scoped: str, env: str, says: str) -> None:
    cfg = _config(tmp_path, two_versions(1, 2), scoped="scoped_keys:\n"
                  + textwrap.indent(scoped, "  "))
    got = _cli("check", str(cfg), env={"KILLGATE_TEST_DRILL_SECRET": env})
    assert got.returncode == 1, got.stderr
    assert says in got.stderr, got.stderr
    assert env not in got.stderr or env == "short"
    assert "Traceback" not in got.stderr


def test_check_notes_an_unset_variable_and_passes_a_good_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KILLGATE_TEST_DRILL_SECRET", raising=False)
    # (its protocol written out: a V2 route without one has a note of its own)
    cfg = _config(tmp_path, two_versions(1, 2, extra="protocol: v2\n"))
    got = _cli("check", str(cfg))
    assert got.returncode == 0, got.stderr
    assert "note: admin.auth.scoped_keys[0] (drills): no secret: set " \
           "KILLGATE_TEST_DRILL_SECRET" in got.stderr
    got = _cli("check", str(cfg), env={"KILLGATE_TEST_DRILL_SECRET": DRILL_SECRET})
    assert got.returncode == 0 and got.stderr == "", got.stderr
