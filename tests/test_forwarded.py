"""Who the client is behind trusted proxies (gateway/forwarded.py), on both planes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from aiohttp import ClientSession

from gateway.forwarded import ClientAddress
from tests.backends import Recorder, echo_app
from tests.conftest import admin_token, running_gateway, two_versions, wait_until, write_config

T = ClientAddress(["10.0.0.0/8", "192.168.1.1", "fd00::/8"])


@pytest.mark.parametrize(("peer", "xff", "client", "forwarded"), [
    # no trusted peer: X-Forwarded-For is ignored, whatever it says
    ("203.0.113.9", ["1.2.3.4"], "203.0.113.9", "203.0.113.9"),
    # one trusted proxy: the right-most hop is the client; what is left of it is not believed
    ("10.1.1.1", ["6.6.6.6, 198.51.100.7"], "198.51.100.7", "198.51.100.7, 10.1.1.1"),
    # two trusted proxies, in two header lines
    ("10.1.1.1", ["198.51.100.7, 192.168.1.1", "10.2.2.2"], "198.51.100.7",
     "198.51.100.7, 192.168.1.1, 10.2.2.2, 10.1.1.1"),
    # a trusted peer that sent no X-Forwarded-For is the client itself
    ("10.1.1.1", [], "10.1.1.1", "10.1.1.1"),
    # garbage as a hop: the proxy that passed it on is the client; the text goes nowhere
    ("10.1.1.1", ["1.2.3.4, <script>"], "10.1.1.1", "10.1.1.1"),
    ("10.1.1.1", ["evil, 10.9.9.9"], "10.9.9.9", "10.9.9.9, 10.1.1.1"),
    # every hop trusted: the farthest one
    ("10.1.1.1", ["10.3.3.3, 10.2.2.2"], "10.3.3.3", "10.3.3.3, 10.2.2.2, 10.1.1.1"),
    # ports and brackets are dropped; IPv6 and IPv4-mapped peers work
    ("fd00::1", ["[2001:db8::5]:4711"], "2001:db8::5", "2001:db8::5, fd00::1"),
    ("::ffff:10.1.1.1", ["198.51.100.7:80"], "198.51.100.7", "198.51.100.7, 10.1.1.1"),
])
def test_right_most_untrusted_hop(peer: str, xff: list[str], client: str,
                                  forwarded: str) -> None:
    assert T.client(peer, xff) == client
    assert T.forwarded_for(peer, xff) == forwarded


def test_no_trusted_proxies_is_the_socket_peer() -> None:
    none = ClientAddress()
    assert none.client("10.1.1.1", ["1.2.3.4"]) == "10.1.1.1"
    assert none.forwarded_for(None, ["1.2.3.4"]) == "unknown"
    many = ", ".join(["10.0.0.1"] * 10_000)  # a long chain costs a bounded walk
    assert T.client("10.1.1.1", [many]) == "10.0.0.1"


def _bad_token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "x", "iat": now, "exp": now + 60, "iss": "killgate",
                       "aud": "killgate-admin"}, "another-secret-that-is-32-bytes-long!!")


async def test_admin_limits_and_audits_the_client_behind_a_trusted_proxy(tmp_path: Path,
                                                                         backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace(
        "  auth:\n", "  trusted_proxies: [127.0.0.1/32]\n  auth_check_rate: 1\n"
                     "  auth_check_burst: 3\n  auth:\n", 1))
    async with running_gateway(cfg) as g, ClientSession() as s:
        async def status(tok: str, client: str) -> int:
            async with s.get(g.admin + "/v1/status", headers={
                    "Authorization": f"Bearer {tok}",
                    "X-Forwarded-For": f"6.6.6.6, {client}"}) as r:
                return r.status

        # one client behind the ingress spends its own budget, not its neighbours'
        assert [await status(_bad_token(), "198.51.100.7") for _ in range(5)] == \
            [401, 401, 401, 429, 429]
        good = admin_token("killgate:admin", "ops", 600)
        assert await status(good, "198.51.100.8") == 200
        async with s.post(g.admin + "/v1/kill", json={"scope": "global", "reason": "x"},
                          headers={"Authorization": f"Bearer {good}",
                                   "X-Forwarded-For": "198.51.100.8"}) as r:
            assert r.status == 200
        events = await g.gw.sync.store.audit_events()
        assert [e["source"] for e in events if e["action"] == "kill"] == ["198.51.100.8"]

        async def denied() -> set[str]:
            return {e["source"] for e in await g.gw.sync.store.audit_events()
                    if e["action"] in ("authn_fail", "auth_rate_limited")}

        await wait_until(lambda: denied(), 10, 0.05, "the denied calls in the audit trail")
        assert await denied() == {"198.51.100.7"}


async def test_data_plane_forwards_the_believed_chain(tmp_path: Path, backends) -> None:
    rec = Recorder()
    p = await backends(echo_app("v1", rec))
    out = tmp_path / "access.jsonl"
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), extra=(
        f"server: {{access_log: true}}\ntelemetry:\n  access_log: {{path: {out}}}\n"))
    async with running_gateway(cfg) as g, ClientSession() as s:
        async with s.get(g.url + "/v2/models/iris/x",
                         headers={"X-Forwarded-For": "6.6.6.6"}) as r:
            assert r.status == 200
        # not trusted: the socket peer only
        assert dict(rec.requests[-1]["headers"])["x-forwarded-for"] == "127.0.0.1"
    cfg.write_text(cfg.read_text().replace("  auth:\n", "  trusted_proxies: [127.0.0.0/8]\n"
                                                        "  auth:\n", 1))
    async with running_gateway(cfg) as g, ClientSession() as s:
        async with s.get(g.url + "/v2/models/iris/x",
                         headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}) as r:
            assert r.status == 200
        headers = [v for k, v in rec.requests[-1]["headers"] if k == "x-forwarded-for"]
        assert headers == ["198.51.100.7, 127.0.0.1"]
    # the access log names the believed client (and the socket peer before trust was set)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["client"] for line in lines] == ["127.0.0.1", "198.51.100.7"]
