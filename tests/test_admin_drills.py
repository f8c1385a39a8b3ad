"""The drill endpoints of the admin API (admin/drills.py) on an in-process gateway with real
backends: scopes and blast radius, audit records, restore, and the failover drill's
signed fault that only drill requests meet (forged or replayed tokens inject nothing)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.domain.drilltoken import Claims, derive_key
from gateway.domain.drilltoken import mint as mint_drill
from tests.backends import echo_app
from tests.conftest import SECRET, running_gateway, write_config
from tests.drillrig import DRILL, answer, call, hdr, open_drill, routes


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of one series in a /metrics page (whatever the label order)."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        got, _, rest = head.partition("{")
        if got == name and dict(re.findall(r'(\w+)="([^"]*)"', rest)) == labels:
            return float(value)
    return None


async def test_kill_drill_is_audited_and_restore_leaves_the_route_as_before(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        st, out = await call(session, "POST", f"{a}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "version": "v2",
                              "reason": "monthly rehearsal"})
        assert st == 200, out
        drill = out["drill"]
        assert out["before"]["kills"] == [] and out["applied"]["acked"] == 1
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "pull the switch"})
        assert st == 200, out
        url = g.url + "/drill/iris/infer"
        assert await answer(session, url, **{"x-killgate-pin": "v2"}) == (200, "v1", "failover")
        # the production route is untouched
        assert (await answer(session, g.url + "/v2/models/iris/x",
                             **{"x-killgate-pin": "v2"}))[1] == "v2"
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/restore",
                             {"reason": "done"})
        assert st == 200, out
        assert out["undone"] == [{"unkill": "version:iris-drill:v2"}]
        assert out["state"] == out["before"]
        assert await answer(session, url, **{"x-killgate-pin": "v2"}) == (200, "v2", "pinned")
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "passed", "reason": "done",
                              "summary": {"leaks": 0, "errors": 0,
                                          "time_to_kill_ms": {"max": 12.5}}})
        assert st == 200, out
        st, listed = await call(session, "GET", f"{a}/v1/drills")
        assert st == 200 and listed["open"] == []
        assert listed["history"][0]["target"]["drill"] == drill
        assert listed["history"][0]["after"]["verdict"] == "passed"
        st, audit = await call(session, "GET", f"{a}/v1/audit?limit=10")
        mine = [e for e in audit["events"] if e.get("drill") == drill]
        assert [e["action"] for e in mine] == ["drill.end", "drill.restore", "kill",
                                               "drill.start"]
        assert all(e["actor"] == "dana" for e in mine)
        assert mine[2]["reason"].startswith(f"drill {drill}: ")
        async with session.get(f"{a}/metrics") as r:
            m = await r.text()
        labels = {"kind": "kill", "route": "iris-drill"}
        assert sample(m, "killgate_drill_last_passed", labels) == 1
        assert sample(m, "killgate_drill_last_seconds",
                      {**labels, "measure": "time_to_kill"}) == 0.0125
        assert sample(m, "killgate_drills_open", {}) == 0


async def test_blast_radius_and_scopes(tmp_path: Path, backends, session: ClientSession) -> None:
    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        a = g.admin
        body = {"kind": "kill", "route": "iris", "version": "v2", "reason": "r"}
        st, out = await call(session, "POST", f"{a}/v1/drills", body)
        assert st == 409 and out["error"]["type"] == "production_route", out
        st, out = await call(session, "POST", f"{a}/v1/drills", body,
                             hdr("killgate:read killgate:kill"))
        assert st == 403, out
        st, out = await call(session, "POST", f"{a}/v1/drills", {**body, "production": True})
        assert st == 200, out
        drill = out["drill"]
        # killing on a production route needs the kill scope too
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject", {"reason": "r"})
        assert st == 403 and "killgate:kill" in out["error"]["message"], out
        assert g.gw.holder.doc.kills == {}
        # one open drill per route
        st, out = await call(session, "POST", f"{a}/v1/drills", {**body, "production": True})
        assert st == 409 and out["error"]["type"] == "drill_in_progress"
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject", {"reason": "r"},
                             hdr(DRILL + " killgate:kill"))
        assert st == 200, out
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "stop"})
        assert st == 200 and out["undone"] == [{"unkill": "version:iris:v2"}], out
        assert g.gw.holder.doc.kills == {} and g.gw.holder.doc.drills == {}


async def test_an_operator_kill_during_a_drill_survives_its_restore(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The admin API's kill follows the one kill rule (domain/kills.py): a kill of what an
    open drill killed takes the flag over, so the drill's end leaves the real kill."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        both = hdr(DRILL + " killgate:kill")
        st, out = await call(session, "POST", f"{a}/v1/drills", {
            "kind": "kill", "route": "iris", "version": "v2", "production": True,
            "reason": "r"}, both)
        drill = out["drill"]
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "r"}, both)
        assert st == 200, out
        st, out = await call(session, "POST", f"{a}/v1/kill", {
            "scope": "version", "route": "iris", "version": "v2", "reason": "real incident"},
            hdr("killgate:kill", sub="oncall"))
        assert st == 200 and out["changed"] is True, out
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "r"}, both)
        assert st == 200, out
        assert out["undone"] == [{"kept": "version:iris:v2",
                                  "why": "lifted or replaced since the drill made it"}], out
        flag = g.gw.holder.doc.kills["version:iris:v2"]
        assert (flag.actor, flag.reason) == ("oncall", "real incident")


async def test_a_drill_does_not_get_round_the_two_person_rule(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2), extra="approvals: {rollback: 2}\n")
    async with running_gateway(cfg) as g:
        a = g.admin
        both = hdr(DRILL + " killgate:rollout")
        st, out = await call(session, "POST", f"{a}/v1/drills", {
            "kind": "rollback", "route": "iris", "production": True, "reason": "r"}, both)
        assert st == 200, out
        drill = out["drill"]
        gen = g.gw.holder.doc.generation
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "r", "to": "v2"}, both)
        assert (st, out["error"]["type"]) == (409, "approval_required"), out
        assert "approvals.rollback" in out["error"]["message"]
        assert g.gw.holder.doc.generation == gen and g.gw.holder.doc.overrides == {}
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "r"}, both)
        assert st == 200 and out["undone"] == [], out
        # a drill route serves no users: its rollback is not gated
        st, out = await call(session, "POST", f"{a}/v1/drills", {
            "kind": "rollback", "route": "iris-drill", "reason": "r"})
        drill = out["drill"]
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "r", "to": "v2"})
        assert st == 200, out
        assert g.gw.holder.doc.overrides["iris-drill"].stable == "v2"
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "passed", "reason": "r"})
        assert st == 200 and g.gw.holder.doc.overrides == {}, out


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(tmp_path: Path, backends,
                                                           session: ClientSession) -> None:
    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        a = g.admin
        gen = g.gw.holder.doc.generation
        base = {"kind": "kill", "route": "iris-drill", "reason": "r"}
        for body, status in (({**base, "kind": "chaos"}, 400), ({**base, "route": "nope"}, 404),
                             ({**base, "version": "v9"}, 404), ({**base, "version": 3}, 400),
                             ({**base, "production": "yes"}, 400),
                             ({**base, "duration": "forever"}, 400),
                             ({**base, "duration": "9h"}, 400), ({**base, "reason": ""}, 400),
                             ({**base, "extra": 1}, 400), ([1], 400)):
            st, out = await call(session, "POST", f"{a}/v1/drills", body)
            assert st == status, (body, out)
        for path in ("inject", "restore", "end"):
            st, out = await call(session, "POST", f"{a}/v1/drills/d-none/{path}",
                                 {"reason": "r", **({"verdict": "passed"} if path == "end"
                                                    else {})})
            assert st == 404, (path, out)
        st, out = await call(session, "POST", f"{a}/v1/drills/..%2F/restore", {"reason": "r"})
        assert st == 404
        st, out = await call(session, "POST", f"{a}/v1/drills", {**base, "kind": "failover"})
        assert st == 400, out  # a failover drill names the version that fails
        st, out = await call(session, "POST", f"{a}/v1/drills",
                             {**base, "kind": "failover", "version": "v2"})
        drill = out["drill"]
        gen = g.gw.holder.doc.generation
        for body in ({"reason": "r", "ttl": "1h"}, {"reason": "r", "ttl": 5},
                     {"reason": "r", "scope": "x"}, {"reason": "r", "to": "v1"}):
            st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject", body)
            assert st == 400, (body, out)
        for body in ({"reason": "r", "verdict": "great"},
                     {"reason": "r", "verdict": "passed", "summary": [1]},
                     {"reason": "r", "verdict": "passed",
                      "summary": {f"k{i}": "y" * 1000 for i in range(20)}},
                     {"reason": "r", "verdict": "passed", "summary": {"x": [[[[[[[1]]]]]]]}}):
            st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end", body)
            assert st == 400, (body, out)
        async with session.post(f"{a}/v1/drills/{drill}/end",
                                headers={**hdr(), "Content-Type": "application/json"},
                                data='{"reason":"r","verdict":"passed","summary":{"x":NaN}}',
                                ) as r:
            assert r.status == 400
        st, out = await call(session, "GET", f"{a}/v1/drills?limit=0")
        assert st == 400
        assert g.gw.holder.doc.generation == gen  # nothing changed
        st, _ = await call(session, "GET", f"{a}/v1/drills", headers=hdr("killgate:kill"))
        assert st == 403
        # a kill drill's scope that is no scope ({}, 0, false, ""): it killed the version
        st, out = await call(session, "POST", f"{a}/v1/drills", {**base, "route": "iris",
                                                                 "production": True})
        assert st == 200, out
        kill, gen = out["drill"], g.gw.holder.doc.generation
        for scope in ({}, 0, False, "", []):
            st, out = await call(session, "POST", f"{a}/v1/drills/{kill}/inject",
                                 {"reason": "r", "scope": scope}, hdr(DRILL + " killgate:kill"))
            assert st == 400 and "'scope'" in out["error"]["message"], (scope, out)
        assert g.gw.holder.doc.generation == gen


async def test_failover_fault_meets_drill_requests_only(tmp_path: Path, backends,
                                                        session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        st, out = await call(session, "POST", f"{a}/v1/drills",
                             {"kind": "failover", "route": "iris-drill", "version": "v2",
                              "reason": "r"})
        drill, token = out["drill"], out["token"]
        assert token.startswith("kgd1.")
        url = g.url + "/drill/iris/infer"
        pin = {"x-killgate-pin": "v2"}
        # not injected yet: the token alone does nothing
        assert await answer(session, url, **pin, **{"x-killgate-drill": token}) == \
            (200, "v2", "pinned")
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "fail v2 for drill traffic", "ttl": "30s"})
        assert st == 200, out
        assert await answer(session, url, **pin, **{"x-killgate-drill": token}) == \
            (200, "v1", "failover")
        assert await answer(session, url, **pin) == (200, "v2", "pinned")  # no token
        # the backend that answers a drill request never sees the token (nor the pin)
        async with session.get(url, headers={"x-killgate-drill": token,
                                             "X-KillGate-Drill-Route": "1"}) as r:
            seen = dict((k, v) for k, v in (await r.json())["headers"])
        assert r.status == 200 and not [k for k in seen if k.startswith("x-killgate")], seen
        # the same token on the production route, where users are: nothing
        prod = g.url + "/v2/models/iris/infer"
        assert await answer(session, prod, **pin, **{"x-killgate-drill": token}) == \
            (200, "v2", "pinned")
        # forged: signed with another key; altered: same signature, another route
        claims = Claims(drill, "iris-drill", "v2", "guess", 2e9)
        forged = mint_drill(derive_key(b"not the key" * 4), claims)
        assert (await answer(session, url, **pin, **{"x-killgate-drill": forged}))[1] == "v2"
        assert (await answer(session, url, **pin,
                             **{"x-killgate-drill": token[:-2] + "AA"}))[1] == "v2"
        # the drill's health: never counted against v2 (no ejection, no outcome)
        assert g.gw.holder.table.unhealthy == frozenset()
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "passed", "reason": "done"})
        assert st == 200 and out["undone"] == [{"fault_cleared": "v2"}], out
        # replayed after the drill: nothing
        assert await answer(session, url, **pin, **{"x-killgate-drill": token}) == \
            (200, "v2", "pinned")
        async with session.get(f"{a}/metrics") as r:
            m = await r.text()
        assert sample(m, "killgate_drill_tokens_refused_total", {}) == 2, m
        assert 'kind="drill_fault"' in m


async def test_instances_publish_their_addresses_with_the_heartbeat(
        tmp_path: Path, backends, session: ClientSession) -> None:
    from tests.conftest import wait_until

    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        async def published() -> dict[str, Any] | None:
            _, out = await call(session, "GET", f"{g.admin}/v1/status")
            inst = out["instances"].get("test", {})
            return inst if "data" in inst else None

        inst = await wait_until(published, 5, 0.05, "the addresses in the heartbeat")
        assert inst["data"] == g.url and inst["admin"] == g.admin


def test_the_drill_key_comes_from_its_own_secret_else_the_admin_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.admin.drillsupport import load_drill_key
    from gateway.configfile import LoadedConfig, parse_config_text

    def loaded(extra: str = "", auth: str = "    hs256_secret_env: KILLGATE_TEST_SECRET\n"
               ) -> LoadedConfig:
        text = ("admin:\n  auth:\n" + auth + extra + "routes:\n  - name: r\n"
                "    match: {path_prefix: /r}\n    stable: v1\n"
                "    versions: [{name: v1, url: 'http://127.0.0.1:1'}]\n")
        return LoadedConfig(parse_config_text(text), "sha256:x", tmp_path / "k.yaml")

    monkeypatch.delenv("KILLGATE_DRILL_KEY", raising=False)
    from_admin, problem = load_drill_key(loaded())
    assert from_admin is not None and problem is None
    assert from_admin != SECRET.encode()  # derived, never the secret itself
    monkeypatch.setenv("KILLGATE_DRILL_KEY", "d" * 32)
    own, _ = load_drill_key(loaded())
    assert own is not None and own != from_admin
    (tmp_path / "drill.key").write_text("f" * 40 + "\n")
    (tmp_path / "drill.key").chmod(0o644)  # a secret others may read: refused
    key, problem = load_drill_key(loaded("drills:\n  key_file: drill.key\n"))
    assert key is None and "chmod 600" in str(problem) and "f" * 40 not in str(problem)
    (tmp_path / "drill.key").chmod(0o600)
    from_file, _ = load_drill_key(loaded("drills:\n  key_file: drill.key\n"))
    assert from_file not in (None, own)
    monkeypatch.setenv("KILLGATE_DRILL_KEY", "short")
    key, problem = load_drill_key(loaded())
    assert key is None and problem is not None and "32 bytes" in problem
    monkeypatch.delenv("KILLGATE_DRILL_KEY")
    rs = "    algorithms: [RS256]\n    public_key_file: pub.pem\n"
    key, problem = load_drill_key(loaded(auth=rs))
    assert key is None and "drills.key_env" in str(problem)
    key, problem = load_drill_key(loaded("drills:\n  key_file: missing.key\n"))
    assert key is None and "cannot be read" in str(problem)


async def test_without_a_drill_key_failover_drills_are_refused(
        tmp_path: Path, backends, session: ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILLGATE_DRILL_KEY", "too short")
    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        st, out = await call(session, "POST", f"{g.admin}/v1/drills",
                             {"kind": "failover", "route": "iris-drill", "version": "v2",
                              "reason": "r"})
        assert st == 409 and out["error"]["type"] == "no_drill_key", out
        assert "KILLGATE_DRILL_KEY" in out["error"]["message"] or "drills.key_env" in \
            out["error"]["message"]
        assert g.gw.holder.doc.drills == {}


async def test_restore_from_the_audit_trail_when_the_state_lost_the_drill(
        tmp_path: Path, backends, session: ClientSession) -> None:
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        a = g.admin
        st, out = await call(session, "POST", f"{a}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "scope": None,
                              "reason": "r"} | {"version": "v2"})
        assert st == 400  # ('scope' belongs to inject)
        st, out = await call(session, "POST", f"{a}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "version": "v2",
                              "reason": "r"})
        drill, before = out["drill"], out["before"]
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "r", "scope": "route"})
        assert st == 200, out
        # the state loses the drill's record (an old backup restored), the kill stays
        assert g.gw.sync is not None
        await g.gw.sync.write(lambda cur: Change(drills={drill: None}),
                              lambda cur, new: AuditDraft("ops", "state.restore", {},
                                                          "restored an old backup"))
        assert "route:iris-drill" in g.gw.holder.doc.kills and not g.gw.holder.doc.drills
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/restore",
                             {"reason": "after the backup"})
        assert st == 200, out
        assert out["undone"] == [{"unkill": "route:iris-drill"}]
        assert out["state"] == before and g.gw.holder.doc.kills == {}
        st, audit = await call(session, "GET", f"{a}/v1/audit?limit=5")
        assert audit["events"][0]["after"]["from"] == "audit trail"
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "r"})
        assert st == 200, out
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/restore",
                             {"reason": "again"})
        assert st == 404 and "ended at" in out["error"]["message"], out


async def _hooked(tmp_path: Path, backends: Any, monkeypatch: pytest.MonkeyPatch,
                  events: str) -> tuple[Path, list[dict[str, Any]]]:
    """A config whose webhook (a real receiver) gets `events`, and what it received."""
    from aiohttp import web

    got: list[dict[str, Any]] = []

    async def hook(req: web.Request) -> web.Response:
        got.append(await req.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    hook_port = await backends(app)
    p1 = await backends(echo_app("v1"))
    monkeypatch.setenv("HOOK_SECRET", "h" * 32)
    extra = (f"events:\n  webhooks:\n    - url: http://127.0.0.1:{hook_port}/hook\n"
             f"      secret_env: HOOK_SECRET\n      events: [{events}]\n")
    return write_config(tmp_path, routes(p1, p1), extra=extra), got


async def test_drill_start_and_end_are_posted_as_events(tmp_path: Path, backends,
                                                        session: ClientSession,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import wait_until

    cfg, got = await _hooked(tmp_path, backends, monkeypatch, "drill.start, drill.end")
    async with running_gateway(cfg) as g:
        st, out = await call(session, "POST", f"{g.admin}/v1/drills",
                             {"kind": "rollback", "route": "iris-drill", "reason": "r"})
        drill = out["drill"]
        st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/end",
                             {"verdict": "failed", "reason": "r",
                              "summary": {"time_to_rollback_ms": {"max": 3000}}})
        assert st == 200, out
        await wait_until(lambda: len(got) == 2, 5, 0.02, "two events")
    start, end = got
    assert start["drill"] == end["drill"] == drill
    assert start["event"] == "killgate.drill.start" and start["actor"] == "dana"
    assert start["target"] == {"drill": drill, "kind": "rollback", "route": "iris-drill",
                               "version": None}
    assert start["before"]["kills"] == []  # the state the drill opened on
    assert end["event"] == "killgate.drill.end" and end["after"]["verdict"] == "failed"
    assert end["after"]["summary"] == {"time_to_rollback_ms": {"max": 3000}}


async def test_the_published_host_can_be_set(tmp_path: Path, backends, session: ClientSession,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import wait_until

    monkeypatch.setenv("KILLGATE_ADVERTISE_HOST", "10.1.2.3")  # (a pod's IP)
    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        async def published() -> dict[str, Any] | None:
            _, out = await call(session, "GET", f"{g.admin}/v1/status")
            inst = out["instances"].get("test", {})
            return inst if "data" in inst else None

        inst = await wait_until(published, 5, 0.05, "the addresses in the heartbeat")
        port = g.gw.data_addr[1] if g.gw.data_addr else 0
        assert inst["data"] == f"http://10.1.2.3:{port}"


async def test_a_global_kill_drill_needs_the_kill_scope_and_is_undone(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        a = g.admin
        st, out = await call(session, "POST", f"{a}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "reason": "r"})
        drill, before = out["drill"], out["before"]
        body = {"reason": "everything off", "scope": "global"}
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject", body)
        assert st == 403 and "killgate:kill" in out["error"]["message"], out
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject", body,
                             hdr(DRILL + " killgate:kill"))
        assert st == 200, out
        assert (await answer(session, g.url + "/v2/models/iris/x"))[0] == 503  # users too
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "passed", "reason": "r"})
        assert st == 200 and out["undone"] == [{"unkill": "global"}], out
        assert g.gw.holder.doc.kills == {}
        assert (await answer(session, g.url + "/v2/models/iris/x"))[0] == 200
        assert before["kills"] == []


async def test_a_drills_kill_is_posted_as_the_drills_and_so_is_its_restore(
        tmp_path: Path, backends, session: ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a receiver paging on `killgate.kill` could not tell a rehearsal from an
    incident, and never heard that the drill's restore lifted the kill."""
    from tests.conftest import wait_until

    cfg, got = await _hooked(tmp_path, backends, monkeypatch, "kill, unkill, drill.restore")
    async with running_gateway(cfg) as g:
        st, out = await call(session, "POST", f"{g.admin}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "version": "v2",
                              "reason": "r"})
        drill = out["drill"]
        for step in ("inject", "restore"):
            st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/{step}",
                                 {"reason": "r"})
            assert st == 200, out
        await wait_until(lambda: len(got) == 2, 5, 0.02, "two events")
    kill, restore = got
    assert kill["event"] == "killgate.kill" and kill["drill"] == drill
    assert restore["event"] == "killgate.drill.restore" and restore["drill"] == drill
    assert restore["after"]["undone"] == [{"unkill": "version:iris-drill:v2"}]


async def test_restore_from_the_audit_trail_puts_back_a_progressive_rollout(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A rollback drill on a route in the middle of a progressive rollout, whose record the
    state lost: the restore from the audit trail alone put the latch back but not the
    rollout (the audit events did not carry it)."""
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        a = g.admin
        assert g.gw.sync is not None
        prog = {"canary": "v2", "step": 1, "since": 1.7e9, "state": "running"}
        await g.gw.sync.write(lambda cur: Change(progress={"iris-drill": prog}),
                              lambda cur, new: AuditDraft("ops", "progressive.step", {}, "r"))
        st, out = await call(session, "POST", f"{a}/v1/drills",
                             {"kind": "rollback", "route": "iris-drill", "reason": "r"})
        drill, before = out["drill"], out["before"]
        assert before["progress"] == prog
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "r", "to": "v1"})
        assert st == 200, out
        assert "iris-drill" not in g.gw.holder.doc.progress
        await g.gw.sync.write(lambda cur: Change(drills={drill: None}),
                              lambda cur, new: AuditDraft("ops", "state.restore", {},
                                                          "restored an old backup"))
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/restore",
                             {"reason": "after the backup"})
        assert st == 200, out
        assert out["state"] == before, out


async def test_two_drills_opened_at_once_on_one_route_one_wins(
        tmp_path: Path, backends, session: ClientSession) -> None:
    import asyncio

    p1 = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, routes(p1, p1))) as g:
        body = {"kind": "kill", "route": "iris-drill", "version": "v2", "reason": "r"}
        got = await asyncio.gather(*(call(session, "POST", f"{g.admin}/v1/drills", body)
                                     for _ in range(4)))
        assert sorted(st for st, _ in got) == [200, 409, 409, 409], got
        assert {out["error"]["type"] for st, out in got if st == 409} == {"drill_in_progress"}
        assert len(g.gw.holder.doc.drills) == 1


async def test_a_drill_makes_a_bounded_number_of_changes(tmp_path: Path, backends,
                                                         session: ClientSession) -> None:
    """Each injection is kept in the drill's record, in the state document every write
    signs and sends whole: a drill token injecting over and over (200 rollbacks made
    600 KB) is refused past MAX_INJECTED, and its restore still puts the route back."""
    from gateway.domain.drills import MAX_INJECTED

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        st, out = await call(session, "POST", f"{a}/v1/drills",
                             {"kind": "rollback", "route": "iris-drill", "reason": "r"})
        assert st == 200, out
        drill = out["drill"]
        for i in range(MAX_INJECTED):
            st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                                 {"reason": "r" * 1000, "to": ("v2", "v1")[i % 2]})
            assert st == 200, out
        gen = g.gw.holder.doc.generation
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "again", "to": "v2"})
        assert (st, out["error"]["type"]) == (409, "too_many_injections"), out
        assert g.gw.holder.doc.generation == gen
        assert len(g.gw.holder.doc.drills[drill].injected) == MAX_INJECTED
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/restore",
                             {"reason": "done"})
        assert st == 200, out
        assert "iris-drill" not in g.gw.holder.doc.overrides  # as before the drill


async def test_a_retried_restore_or_end_says_what_it_undid(tmp_path: Path, backends,
                                                           session: ClientSession) -> None:
    """A restore (or an end) whose answer was lost after its commit is sent again with the
    same Idempotency-Key (the drill runner does, `killgate drill restore` too): the replay
    answered `undone: []`, so `killgate drill restore` printed 'nothing="to undo"' for a
    restore that had lifted the drill's kill, and a kill someone took over during the drill
    was not named as kept. The replay now says what the write undid."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin
        for path, body in (("restore", {"reason": "r"}),
                           ("end", {"reason": "r", "verdict": "aborted"})):
            drill = await open_drill(session, a)
            st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                                 {"reason": "r"})
            assert st == 200, out
            h = {**hdr(), "Idempotency-Key": f"k-{path}"}
            answers = [await call(session, "POST", f"{a}/v1/drills/{drill}/{path}", body, h)
                       for _ in range(2)]
            assert [st for st, _ in answers] == [200, 200], answers
            undone = [out["undone"] for _, out in answers]
            assert undone == [[{"unkill": "version:iris-drill:v2"}]] * 2, undone
            if path == "restore":
                st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                                     {"reason": "r", "verdict": "aborted"})
                assert st == 200, out
