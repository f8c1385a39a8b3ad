"""Two-person approvals and break-glass (admin/approvals.py; CONTRACT §5.2; RELIABILITY
rows 46-47): a second principal is required where configured, self-approval is refused,
a decline or expiry drops the request, break-glass is audited, and a kill never waits."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.domain.statedoc import Change, StateDoc
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY_ENV,
    RedisServer,
    admin_token,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_cli import acli

APPROVALS = "approvals: {unkill_global: 2, promote: 2, weights: 3, ttl: 2s}\n"


def tok(sub: str, scope: str = "killgate:admin") -> str:
    return admin_token(scope, sub, 600)


class Api:
    def __init__(self, session: ClientSession, admin: str) -> None:
        self.s = session
        self.admin = admin

    async def __call__(self, who: str, method: str, path: str, body: dict | None = None,
                       scope: str = "killgate:admin") -> tuple[int, Any]:
        async with self.s.request(method, self.admin + path, json=body,
                                  headers={"Authorization": f"Bearer {tok(who, scope)}"}) as r:
            return r.status, await r.json()


async def _events(g: Any, *actions: str) -> list[dict[str, Any]]:
    return [e for e in await g.gw.sync.store.audit_events() if e["action"] in actions]


async def test_a_second_principal_lifts_a_global_kill(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        # a kill never waits for anyone
        status, body = await api("alice", "POST", "/v1/kill", {"scope": "global", "reason": "x"})
        assert status == 200 and "global" in g.gw.holder.doc.kills
        status, body = await api("alice", "POST", "/v1/unkill",
                                 {"scope": "global", "reason": "fixed"})
        assert status == 202, body
        ap = body["approval"]
        assert (ap["action"], ap["needs"], ap["approved_by"], ap["requested_by"]) == (
            "unkill", 2, ["alice"], "alice")
        assert ap["id"].startswith("ap-") and ap["expires"].endswith("Z") and len(ap["hash"]) == 64
        assert "global" in g.gw.holder.doc.kills  # nothing lifted yet
        # the same change asked again is the same request
        status, again = await api("alice", "POST", "/v1/unkill",
                                  {"scope": "global", "reason": "really"})
        assert status == 202 and again["approval"]["id"] == ap["id"]
        status, listing = await api("reader", "GET", "/v1/approvals", scope="killgate:read")
        assert status == 200 and [a["id"] for a in listing["approvals"]] == [ap["id"]]
        # the list says whose request it is (as the approve step compares principals: a
        # variant of the requester's name is the requester), so the console offers no
        # approval the API would refuse
        item = listing["approvals"][0]
        assert (item["yours"], item["approved_by_you"]) == (False, False), item
        status, mine = await api("ALICE ", "GET", "/v1/approvals", scope="killgate:read")
        item = mine["approvals"][0]
        assert (item["yours"], item["approved_by_you"]) == (True, True), item
        path = f"/v1/approvals/{ap['id']}/approve"
        # the requester cannot approve; a principal without the action's scope cannot either
        assert (await api("alice", "POST", path, {}))[1]["error"]["type"] == "self_approval"
        status, body = await api("viewer", "POST", path, {}, scope="killgate:read")
        assert (status, body["error"]["type"]) == (403, "forbidden")
        status, body = await api("rolf", "POST", path, {}, scope="killgate:rollout")
        assert status == 403  # unkill needs killgate:kill
        # an approval names the change it reviewed: another hash is refused
        status, body = await api("bob", "POST", path, {"hash": "0" * 64})
        assert (status, body["error"]["type"]) == (409, "approval_changed")
        assert "global" in g.gw.holder.doc.kills
        status, body = await api("bob", "POST", path, {"hash": ap["hash"], "reason": "agreed"},
                                 scope="killgate:kill")
        assert status == 200, body
        assert body["unkill"] == "global" and body["approval"] == {
            "id": ap["id"], "state": "applied", "approved_by": ["alice", "bob"]}
        assert body["applied"]["acked"] == 1
        assert "global" not in g.gw.holder.doc.kills and g.gw.holder.doc.approvals == {}
        # used up: a replay of the approval finds nothing
        assert (await api("carol", "POST", path, {}))[0] == 404
        requests = await _events(g, "approval.request")
        assert len(requests) == 1 and requests[0]["actor"] == "alice"
        [lifted] = await _events(g, "unkill")
        assert lifted["actor"] == "alice" and lifted["reason"] == "fixed"
        assert lifted["approval"]["approved_by"] == ["alice", "bob"]
        assert lifted["approval"]["hash"] == ap["hash"]
        assert (await api("reader", "GET", "/v1/approvals",
                          scope="killgate:read"))[1] == {"approvals": []}


async def test_three_principals_and_a_decline(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        gen = g.gw.holder.doc.generation
        status, body = await api("alice", "PUT", "/v1/routes/iris/weights",
                                 {"weights": {"v1": 50, "v2": 50}, "reason": "shift"})
        assert status == 202 and body["approval"]["needs"] == 3
        ident = body["approval"]["id"]
        # the same weights written as floats: the same change, so the same request (the
        # admin review: 50 and 50.0 hashed apart and opened a second one)
        status, again = await api("alice", "PUT", "/v1/routes/iris/weights",
                                  {"weights": {"v1": 50.0, "v2": 5e1}, "reason": "shift"})
        assert status == 202 and again["approval"]["id"] == ident, again
        status, body = await api("bob", "POST", f"/v1/approvals/{ident}/approve", {})
        assert status == 202 and body["approval"]["approved_by"] == ["alice", "bob"]
        assert (await api("bob", "POST", f"/v1/approvals/{ident}/approve", {}))[1][
            "error"]["type"] == "already_approved"
        assert "iris" not in g.gw.holder.doc.overrides
        status, body = await api("dave", "POST", f"/v1/approvals/{ident}/decline",
                                 {"reason": "not during the sale"})
        assert status == 200 and body["approval"] == {"id": ident, "state": "declined"}
        assert (await api("carol", "POST", f"/v1/approvals/{ident}/approve", {}))[0] == 404
        assert "iris" not in g.gw.holder.doc.overrides  # nothing ever changed the route
        assert g.gw.holder.doc.generation == gen + 3  # request, approval, decline
        [declined] = await _events(g, "approval.decline")
        assert declined["actor"] == "dave" and declined["reason"] == "not during the sale"
        assert declined["before"]["approved_by"] == ["alice", "bob"]
        assert len(await _events(g, "approval.approve")) == 1


@pytest.mark.parametrize(("alice", "bob"), [("Alice", "BOB"), ("alice ", " bob"),
                                           ("\uff41lice", "\uff42ob"),
                                           ("ali\u200bce", "b\u200dob"),
                                           # (control characters: the token is refused,
                                           # tests/test_admin_hostile_input.py)
                                           # invisible, but not format characters: a
                                           # combining grapheme joiner, a variation
                                           # selector, Hangul fillers
                                           ("ali\u034fce", "bo\ufe0fb"),
                                           ("alice\u3164", "\u115fbob")])
async def test_a_variant_of_a_subject_is_not_a_second_person(
        alice: str, bob: str, tmp_path: Path, backends) -> None:
    """A second token of the same person whose subject differs only by case, spaces, width
    or invisible characters neither approves their own request nor counts twice."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        assert (await api("alice", "POST", "/v1/kill", {"scope": "global", "reason": "x"}))[0] == 200
        status, body = await api("alice", "POST", "/v1/unkill", {"scope": "global", "reason": "y"})
        assert status == 202
        ident = body["approval"]["id"]
        status, body = await api(alice, "POST", f"/v1/approvals/{ident}/approve", {})
        assert (status, body["error"]["type"]) == (403, "self_approval"), body
        assert "global" in g.gw.holder.doc.kills
        # three principals needed: bob, then bob again under another spelling, is one
        status, body = await api("alice", "PUT", "/v1/routes/iris/weights",
                                 {"weights": {"v1": 50, "v2": 50}, "reason": "shift"})
        ident = body["approval"]["id"]
        assert (await api("bob", "POST", f"/v1/approvals/{ident}/approve", {}))[0] == 202
        status, body = await api(bob, "POST", f"/v1/approvals/{ident}/approve", {})
        assert (status, body["error"]["type"]) == (409, "already_approved"), body
        assert "iris" not in g.gw.holder.doc.overrides


async def test_open_requests_are_bounded_per_requester_and_in_all(
        tmp_path: Path, backends, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every open request rides in the state document each write (a kill too) signs and
    sends whole: one principal asking ever new changes (1,500 took a kill from 33 to 99
    ms, and 16 MiB makes the store unreadable) is refused past its share."""
    from gateway.admin import approvals

    monkeypatch.setattr(approvals, "MAX_OPEN", 12)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)

        async def ask(who: str, n: int) -> tuple[int, Any]:
            return await api(who, "PUT", "/v1/routes/iris/weights",
                             {"weights": {"v1": n, "v2": 1}, "reason": "r" * 1000})

        for n in range(1, approvals.MAX_OPEN_PER_REQUESTER + 1):
            assert (await ask("mallory", n))[0] == 202
        gen = g.gw.holder.doc.generation
        status, body = await ask("Mallory ", 99)
        assert (status, body["error"]["type"]) == (409, "too_many_approvals"), body
        assert (await ask("mallory", 1))[0] == 202  # the same change: the same open request
        assert g.gw.holder.doc.generation == gen and len(g.gw.holder.doc.approvals) == 10
        assert (await ask("bob", 1000))[0] == 202 and (await ask("bob", 1001))[0] == 202
        status, body = await ask("carol", 2000)  # 12 open in all
        assert (status, body["error"]["type"]) == (409, "too_many_approvals"), body
        # a decline makes room again
        ident = next(iter(g.gw.holder.doc.approvals))
        assert (await api("dave", "POST", f"/v1/approvals/{ident}/decline", {}))[0] == 200
        assert (await ask("carol", 2000))[0] == 202
        assert (await ask("mallory", 99))[0] == 409


async def test_an_open_request_expires(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        status, body = await api("alice", "POST", "/v1/routes/iris/promote",
                                 {"version": "v2", "reason": "ship"})
        assert status == 202
        ident = body["approval"]["id"]
        await wait_until(lambda: not g.gw.holder.doc.approvals, 6, 0.05, "the expiry")
        assert (await api("bob", "POST", f"/v1/approvals/{ident}/approve", {}))[0] == 404
        [expired] = await _events(g, "approval.expire")
        assert expired["actor"] == "killgate/auto" and expired["target"] == {"approval": ident}
        assert expired["before"]["requested_by"] == "alice"
        assert g.gw.holder.table.by_name["iris"].stable == "v1"


async def test_break_glass_skips_approval_loudly(tmp_path: Path, backends, caplog) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    caplog.set_level(logging.INFO, "killgate")
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        await api("alice", "POST", "/v1/kill", {"scope": "global", "reason": "x"})
        body = {"scope": "global", "reason": "the outage is over", "break_glass": True}
        # killgate:admin does not imply break-glass
        status, answer = await api("alice", "POST", "/v1/unkill", body)
        assert (status, answer["error"]["type"]) == (403, "forbidden")
        assert "killgate:breakglass" in answer["error"]["message"]
        status, answer = await api("alice", "POST", "/v1/unkill", {**body, "break_glass": "yes"},
                                   scope="killgate:kill killgate:breakglass")
        assert status == 400
        status, answer = await api("alice", "POST", "/v1/unkill", body,
                                   scope="killgate:kill killgate:breakglass")
        assert status == 200 and answer["break_glass"] is True
        assert "global" not in g.gw.holder.doc.kills
        [ev] = await _events(g, "unkill")
        assert ev["break_glass"] is True and ev["actor"] == "alice"
        assert g.gw.metrics.get("killgate_break_glass_total", ("unkill",)) == 1
        loud = [r for r in caplog.records if r.getMessage() == "break_glass"]
        assert len(loud) == 1 and loud[0].levelno == logging.ERROR
        # a kill takes no break_glass field (it never needs approval)
        status, answer = await api("alice", "POST", "/v1/kill", {
            "scope": "global", "reason": "x", "break_glass": True})
        assert status == 400


async def test_a_kill_never_waits(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    gated = "approvals: {unkill_global: 5, unkill_route: 5, unkill_version: 5, rollback: 5, " \
            "promote: 5, weights: 5, release: 5}\n"
    cfg = write_config(tmp_path, two_versions(p, p), extra=gated)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        for body in ({"scope": "global"}, {"scope": "route", "route": "iris"},
                     {"scope": "version", "route": "iris", "version": "v2"}):
            status, answer = await api("alice", "POST", "/v1/kill", {**body, "reason": "now"},
                                       scope="killgate:kill")
            assert status == 200 and answer["changed"] is True
        assert len(g.gw.holder.doc.kills) == 3
        # and every other write waits (a rollback to a killed route is refused: 409
        # target_killed, test_rolled_off.py)
        status, _ = await api("alice", "POST", "/v1/routes/iris/promote",
                              {"version": "v1", "reason": "x"})
        assert status == 202


async def test_a_tampered_request_is_not_applied(tmp_path: Path, backends) -> None:
    """Someone who can write the state store changes the stored weights after the
    request: the record no longer matches its hash, and the approval is refused."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        status, body = await api("alice", "POST", "/v1/routes/iris/promote",
                                 {"version": "v1", "reason": "x"})
        ident = body["approval"]["id"]

        def tamper(cur: StateDoc) -> Change:
            rec = dict(cur.approvals[ident])
            rec["intent"] = {**rec["intent"], "args": {"version": "v2"}}
            return Change(approvals={ident: rec})

        from gateway.domain.audit import AuditDraft

        await g.gw.sync.write(tamper, lambda c, n: AuditDraft("mallory", "x", {}, "tamper"))
        status, body = await api("bob", "POST", f"/v1/approvals/{ident}/approve", {})
        assert (status, body["error"]["type"]) == (409, "approval_tampered")
        assert "iris" not in g.gw.holder.doc.overrides


async def test_requested_on_one_instance_approved_on_another(tmp_path: Path, backends,
                                                             redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    state = textwrap.dedent(f"""\
        state:
          backend: redis
          url: {redis_server.url}
          signing_key_env: {STATE_KEY_ENV}
          snapshot_path: {{snap}}
          poll_interval: 50ms
        """)
    cfgs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        cfgs.append(write_config(tmp_path / name, two_versions(p, p), extra=APPROVALS,
                                 state=state.format(snap=tmp_path / name / "snap.json")))
    async with running_gateway(cfgs[0], "gw-a") as a, running_gateway(cfgs[1], "gw-b") as b, \
            ClientSession() as s:
        on_a, on_b = Api(s, a.admin), Api(s, b.admin)
        await on_a("alice", "POST", "/v1/kill", {"scope": "global", "reason": "x"})
        status, body = await on_a("alice", "POST", "/v1/unkill", {"scope": "global",
                                                                 "reason": "ok"})
        assert status == 202
        status, body = await on_b("bob", "POST", f"/v1/approvals/{body['approval']['id']}"
                                                 "/approve", {})
        assert status == 200, body
        assert body["applied"]["instances"] == 2 and body["applied"]["acked"] == 2
        assert "global" not in a.gw.holder.doc.kills and "global" not in b.gw.holder.doc.kills


async def test_the_cli_requests_lists_approves_and_declines(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS.replace("2s", "5m"))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin}
        alice, bob = {**env, "KILLGATE_TOKEN": tok("alice")}, {**env, "KILLGATE_TOKEN": tok("bob")}
        assert (await acli("kill", "--global", "--reason", "x", env=alice)).returncode == 0
        res = await acli("unkill", "--global", "--reason", "fixed", env=alice)
        assert res.returncode == 3, res.stderr  # asked, not done
        assert "approval ap-" in res.stdout and "killgate approve ap-" in res.stdout
        ident = res.stdout.split("approval ", 1)[1].split(" ", 1)[0]
        res = await acli("approvals", env=bob)
        assert res.returncode == 0 and ident in res.stdout and "unkill global" in res.stdout
        assert "asked by alice: fixed" in res.stdout
        res = await acli("approve", ident, env=alice)
        assert res.returncode == 1 and "self_approval" in res.stderr
        res = await acli("approve", ident, "--reason", "checked", env=bob)
        assert res.returncode == 0, res.stderr
        assert "approved and applied: generation" in res.stdout
        assert "global" not in g.gw.holder.doc.kills
        res = await acli("approve", ident, env=bob)
        assert res.returncode == 1 and "no open approval" in res.stderr
        # a decline, and the JSON forms
        res = await acli("--json", "promote", "iris", "v2", "--reason", "ship", env=alice)
        assert res.returncode == 3 and '"approval"' in res.stdout
        ident = res.stdout.split('"id": "', 1)[1].split('"', 1)[0]
        res = await acli("approvals", "--json", env=bob)
        assert res.returncode == 0 and ident in res.stdout
        res = await acli("decline", ident, "--reason", "no", env=bob)
        assert res.returncode == 0 and res.stdout.strip() == f"declined {ident}"
        res = await acli("--json", "promote", "iris", "v2", "--reason", "now",
                         "--break-glass", env=alice)
        assert res.returncode == 1 and "killgate:breakglass" in res.stderr


@pytest.mark.parametrize("ident", ["ap-zz", "../../etc", "ap-" + "0" * 16])
async def test_unknown_approval_ids_are_404(tmp_path: Path, backends, ident: str) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        for verb in ("approve", "decline"):
            status, body = await api("bob", "POST", f"/v1/approvals/{ident}/{verb}", {})
            assert status == 404 and body["error"]["type"] in ("unknown_approval", "not_found")
        await asyncio.sleep(0)


async def test_bad_input_to_an_open_request_is_a_4xx_and_changes_nothing(tmp_path: Path,
                                                                         backends) -> None:
    """Malformed approve and decline calls on an open request: a 4xx naming the problem;
    the request stays open with its approvals, the route unchanged; then a good approval
    still applies it."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        status, body = await api("alice", "POST", "/v1/routes/iris/promote",
                                 {"version": "v2", "reason": "ship"})
        assert status == 202, body
        ident, change = body["approval"]["id"], body["approval"]["hash"]
        open_before = g.gw.holder.doc.approvals
        gen, events = g.gw.holder.doc.generation, len(await g.gw.sync.store.audit_events())
        base = f"{g.admin}/v1/approvals/{ident}"
        bob = {"Authorization": f"Bearer {tok('bob')}"}
        cases: list[tuple[str, str, bytes, int, str, str]] = [
            ("approve", "", b'{"hash": "abc"}', 400, "bad_request", "64 hex digits"),
            ("approve", "", b'{"hash": 7}', 400, "bad_request", "64 hex digits"),
            ("approve", "", b'{"hash": "' + b"G" * 64 + b'"}', 400, "bad_request", "64 hex"),
            ("approve", "", b'{"reason": 7}', 400, "bad_request", "'reason'"),
            ("approve", "", b'{"reason": "  "}', 400, "bad_request", "'reason'"),
            ("approve", "", b'{"evil": 1}', 400, "bad_request", "evil"),
            ("approve", "", b"[]", 400, "bad_request", ""),
            ("approve", "", b'{"reason": "\\ud800"}', 400, "bad_request", ""),
            ("approve", "", b"{not json", 400, "bad_request", ""),
            ("approve", "?wait=soon", b"{}", 400, "bad_request", "wait"),
            ("approve", "?wait=1s&wait=2s", b"{}", 400, "bad_request", "once"),
            ("approve", "", b'{"hash": "' + b"0" * 64 + b'"}', 409, "approval_changed", ""),
            ("decline", "", b'{"hash": "' + change.encode() + b'"}', 400, "bad_request",
             "hash"),
            ("decline", "", b'{"reason": ["no"]}', 400, "bad_request", "'reason'"),
            ("decline", "?wait=-1s", b"{}", 400, "bad_request", "wait"),
        ]
        wrong = []
        for verb, query, payload, want, kind, says in cases:
            async with s.post(f"{base}/{verb}{query}", data=payload,
                              headers={**bob, "content-type": "application/json"}) as r:
                err = (await r.json())["error"]
                if (r.status, err["type"]) != (want, kind) or says not in err["message"]:
                    wrong.append((verb, query, payload, r.status, err))
        assert wrong == []
        # nothing changed: the request is open with alice's approval only, the route as it was
        assert g.gw.holder.doc.approvals == open_before
        assert g.gw.holder.doc.generation == gen and "iris" not in g.gw.holder.doc.overrides
        actions = {e["action"] for e in (await g.gw.sync.store.audit_events())[events:]}
        assert actions <= {"authz_fail"}, actions
        status, body = await api("bob", "POST", f"/v1/approvals/{ident}/approve",
                                 {"hash": change})
        assert status == 200 and body["approval"]["state"] == "applied", body
        assert g.gw.holder.doc.overrides["iris"]


async def test_the_cli_refuses_an_id_that_is_not_one(tmp_path: Path, backends) -> None:
    """`killgate decline`/`approve` send the id as one path segment: an id shaped like a
    path reaches no other endpoint; exit 1 with the API's message, nothing changed."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok("bob")}
        gen = g.gw.holder.doc.generation
        for ident in ("../../kill", "ap-0123456789abcdef/../../../unkill", "x?y=1"):
            res = await acli("decline", ident, "--reason", "no", env=env)
            assert res.returncode == 1 and res.stdout == ""
            assert "404 unknown_approval" in res.stderr, (ident, res.stderr)
            res = await acli("approve", ident, env=env)
            assert res.returncode == 1 and f"no open approval {ident!r}" in res.stderr
        assert g.gw.holder.doc.generation == gen and g.gw.holder.doc.kills == {}


async def test_a_gated_rollback_to_the_previous_stable_names_it_when_asked(
        tmp_path: Path, backends) -> None:
    """A rollback without `to` goes to the previous stable. Gated, it was stored as
    `{"to": null}` and resolved when the last approval applied it: a promote in between
    (not gated here) moved "the previous stable", and the approvers, who had reviewed a
    rollback to v1, applied one to v2 under the same hash. The target is fixed when asked."""
    ps = [await backends(echo_app(v)) for v in ("v1", "v2", "v3")]
    routes = textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{ps[0]}", weight: 100}}
            - {{name: v2, url: "http://127.0.0.1:{ps[1]}", weight: 0}}
            - {{name: v3, url: "http://127.0.0.1:{ps[2]}", weight: 0}}
        """)
    cfg = write_config(tmp_path, routes, extra="approvals: {rollback: 2}\n")
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        st, body = await api("alice", "POST", "/v1/routes/iris/promote",
                             {"version": "v2", "reason": "ship v2"})
        assert st == 200, body
        st, body = await api("alice", "POST", "/v1/routes/iris/rollback", {"reason": "v2 bad"})
        assert st == 202, body
        asked = body["approval"]
        assert asked["args"] == {"to": "v1"}, asked  # what the approvers review
        st, body = await api("alice", "POST", "/v1/routes/iris/promote",
                             {"version": "v3", "reason": "ship v3"})
        assert st == 200, body
        st, body = await api("bob", "POST", f"/v1/approvals/{asked['id']}/approve",
                             {"hash": asked["hash"], "reason": "ok"})
        assert st == 200, body
        assert g.gw.holder.doc.overrides["iris"].stable == "v1"


async def test_a_gated_rollback_whose_previous_stable_left_the_config_says_so(
        tmp_path: Path, backends) -> None:
    """revroll5: the previous stable fixed when asked was one the config no longer has (v1,
    removed from the file after v2's promotion): the request was refused 404
    `unknown_version` "route 'iris' has no version 'v1'", a version the operator never
    named. Now 409 `no_previous_stable`, as without approvals, and nothing is stored."""
    ps = [await backends(echo_app(v)) for v in ("v1", "v2", "v3")]

    def routes(*names: str, stable: str) -> str:
        return "".join(["- name: iris\n  match: {path_prefix: /v2/models/iris}\n",
                        f"  stable: {stable}\n  versions:\n"] + [
            f'    - {{name: {n}, url: "http://127.0.0.1:{ps[int(n[1]) - 1]}", '
            f'weight: {100 if n == stable else 0}}}\n' for n in names])

    cfg = write_config(tmp_path, routes("v1", "v2", stable="v1"),
                       extra="approvals: {rollback: 2}\n")
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        st, body = await api("alice", "POST", "/v1/routes/iris/promote",
                             {"version": "v2", "reason": "ship v2"})
        assert st == 200, body
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, routes("v2", "v3", stable="v2"), name="b.yaml",
                                    extra="approvals: {rollback: 2}\n").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10, what="the reload")
        st, body = await api("alice", "POST", "/v1/routes/iris/rollback", {"reason": "v2 bad"})
        assert st == 409 and body["error"]["type"] == "no_previous_stable", body
        assert "'v1'" in body["error"]["message"], body


async def test_an_approver_without_read_scope_lists_what_it_may_approve(
        tmp_path: Path, backends) -> None:
    """GET /v1/approvals needed killgate:read, so `killgate approve` (which shows the
    request and approves the hash it showed) failed 403 for a token that may approve an
    unkill (killgate:kill) but not read. Without read, a token lists the open requests
    it may approve; one that may approve nothing is refused (and audited) as before."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        await api("alice", "POST", "/v1/kill", {"scope": "global", "reason": "x"})
        status, unkill = await api("alice", "POST", "/v1/unkill",
                                   {"scope": "global", "reason": "fixed"})
        assert status == 202, unkill
        status, promote = await api("alice", "POST", "/v1/routes/iris/promote",
                                    {"version": "v2", "reason": "r"})
        assert status == 202, promote
        ids = {"unkill": unkill["approval"]["id"], "promote": promote["approval"]["id"]}
        for scope, want in [("killgate:read", {"unkill", "promote"}),
                            ("killgate:kill", {"unkill"}), ("killgate:rollout", {"promote"})]:
            status, listing = await api("bob", "GET", "/v1/approvals", scope=scope)
            assert status == 200, listing
            assert {a["id"] for a in listing["approvals"]} == {ids[w] for w in want}, scope
        status, body = await api("bob", "GET", "/v1/approvals", scope="killgate:alert")
        assert (status, body["error"]["type"]) == (403, "forbidden")
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok("bob", "killgate:kill")}
        res = await acli("approve", ids["unkill"], env=env)
        assert res.returncode == 0 and "approved and applied" in res.stdout, res
        assert "global" not in g.gw.holder.doc.kills
        # an open request this token may not approve is not called gone: 'no open approval
        # (expired, declined or applied?)' sent a tired approver away from one still waiting
        res = await acli("approve", ids["promote"], env=env)
        assert res.returncode == 1 and "(expired, declined or applied?)" not in res.stderr, res
        assert "this token may approve" in res.stderr and "killgate:rollout" in res.stderr, res


BOT_SECRET = "kill-bot-secret-0123456789-abcdefghijklmnop"


async def test_one_scoped_key_is_one_principal(tmp_path: Path, backends,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A scoped key's holder (a kill bot's job) can mint any `sub`: `key:bot/a` and
    `key:bot/b` are one secret, so one principal. Before, the bot requested a global
    unkill as one subject and approved it as another: the two-person rule lifted by one
    job's secret (and its ever-new subjects could fill every open-request slot)."""
    from gateway.admin.tokens import mint

    monkeypatch.setenv("KILLGATE_TEST_BOT_SECRET", BOT_SECRET)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=APPROVALS)
    cfg.write_text(cfg.read_text().replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n    scoped_keys:\n      - name: bot\n"
        "        hs256_secret_env: KILLGATE_TEST_BOT_SECRET\n"
        "        max_scopes: [killgate:kill]\n"))

    def bot(sub: str) -> str:
        return mint(BOT_SECRET, sub, "killgate:kill", 300, "killgate", "killgate-admin", "bot")

    async with running_gateway(cfg) as g, ClientSession() as s:
        async def call(token: str, path: str, body: dict) -> tuple[int, Any]:
            async with s.post(g.admin + path, json=body,
                              headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status, await r.json()

        assert (await call(bot("a"), "/v1/kill", {"scope": "global", "reason": "x"}))[0] == 200
        status, body = await call(bot("a"), "/v1/unkill", {"scope": "global", "reason": "y"})
        assert status == 202, body
        ident = body["approval"]["id"]
        status, body = await call(bot("b"), f"/v1/approvals/{ident}/approve", {})
        assert (status, body["error"]["type"]) == (403, "self_approval"), body
        assert "scoped key 'bot' is one principal" in body["error"]["message"], body
        assert "global" in g.gw.holder.doc.kills
        # a person approves it
        status, body = await call(tok("bob", "killgate:kill"),
                                  f"/v1/approvals/{ident}/approve", {})
        assert status == 200, body
        assert "global" not in g.gw.holder.doc.kills


async def test_an_unkill_under_a_wider_kill_says_the_traffic_stays_stopped(
        tmp_path: Path, backends) -> None:
    """'lifted route:iris' under a global kill read as 'iris is served again'. The answer
    (`still_killed_by`), the CLI's line and an approval's apply name the wider kill."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra="approvals: {unkill_route: 2}\n")
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        for body in ({"scope": "global"}, {"scope": "route", "route": "iris"},
                     {"scope": "version", "route": "iris", "version": "v2"}):
            assert (await api("alice", "POST", "/v1/kill", {**body, "reason": "x"}))[0] == 200
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok("bob")}
        res = await acli("unkill", "--route", "iris", "--version", "v2", "--reason", "ok",
                         env=env)
        assert res.returncode == 0, res
        assert "lifted version:iris:v2; STILL KILLED by the global kill" in res.stdout, res
        status, body = await api("alice", "POST", "/v1/unkill",
                                 {"scope": "route", "route": "iris", "reason": "ok"})
        assert status == 202, body
        status, body = await api("bob", "POST",
                                 f"/v1/approvals/{body['approval']['id']}/approve", {})
        assert status == 200 and body["still_killed_by"] == "global", body
        status, body = await api("bob", "POST", "/v1/unkill", {"scope": "global", "reason": "ok"})
        assert status == 200 and "still_killed_by" not in body, body  # (not gated here)


async def test_asking_for_a_change_another_requested_says_you_may_approve_it(
        tmp_path: Path, backends) -> None:
    """Bob asks for the unkill alice asked for: he gets her open request (202), and the CLI
    told him 'nothing is changed until another principal runs: killgate approve', so at
    3 a.m. he waited for someone else while he was that other principal. The answer says
    he may approve it (`you_may_approve`), and the CLI says how."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra="approvals: {unkill_global: 2, ttl: 1m}\n")
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        await api("alice", "POST", "/v1/kill", {"scope": "global", "reason": "x"})
        unkill = {"scope": "global", "reason": "fixed"}
        status, asked = await api("alice", "POST", "/v1/unkill", unkill)
        assert status == 202 and "you_may_approve" not in asked, asked
        status, again = await api("Alice", "POST", "/v1/unkill", unkill)
        assert status == 202 and "you_may_approve" not in again, again  # (her own)
        ident = asked["approval"]["id"]
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok("bob", "killgate:kill")}
        res = await acli("unkill", "--global", "--reason", "fixed too", env=env)
        assert res.returncode == 3, res
        assert "already requested by alice" in res.stdout, res
        assert f"you may approve it: killgate approve {ident}" in res.stdout, res
        status, body = await api("bob", "POST", "/v1/unkill", unkill)
        assert status == 202 and body["you_may_approve"] is True, body
        assert body["approval"]["id"] == ident and "global" in g.gw.holder.doc.kills
