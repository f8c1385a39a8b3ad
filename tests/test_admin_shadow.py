"""GET /v1/routes/{route}/shadow (admin/shadow.py): scope, refusals, the contract's shape;
and the promotion gate on the admin writes (a 409 while the shadow agrees too little)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.admin.shadow import strict_dumps
from tests.conftest import admin_token, bearer, running_gateway, wait_until, write_config
from tests.shadow_backends import v2_app, v2_request

Start = Callable[[web.Application], Awaitable[int]]


def auth(scope: str) -> dict[str, str]:
    return bearer(scope, 'alice', 3 * 3600)


READ, ROLLOUT = auth("killgate:read"), auth("killgate:rollout killgate:read")


def routes(p1: int, p2: int, p3: int, gate: str = "") -> str:
    analysis = f"  analysis: {{min_shadow_agreement: 0.9, min_shadow_compared: 10{gate}}}\n"
    return f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  protocol: v2
  shadow: {{version: v2, sample: 1.0}}
{analysis}  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
- name: good
  match: {{path_prefix: /v2/models/good}}
  stable: v1
  protocol: v2
  shadow: {{version: v2, sample: 1.0}}
{analysis}  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p3}", weight: 0}}
- name: plain
  match: {{path_prefix: /plain}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
"""


@pytest.fixture
async def gateway(tmp_path: Path, backends: Start):  # type: ignore[no-untyped-def]
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "change" if x % 2 else "noise"))  # 50%
    p3 = await backends(v2_app("v3", lambda x: "noise"))  # 100%
    cfg = write_config(tmp_path, routes(p1, p2, p3))
    async with running_gateway(cfg) as gw:
        yield gw


async def test_scope_and_refusals(gateway, session: ClientSession) -> None:  # type: ignore[no-untyped-def]
    url = gateway.admin + "/v1/routes/iris/shadow"
    async with session.get(url) as r:
        assert r.status == 401
    async with session.get(url, headers=auth("killgate:kill")) as r:
        assert r.status == 403
    for path, status, type_ in (
            ("/v1/routes/nope/shadow", 404, "unknown_route"),
            ("/v1/routes/plain/shadow", 404, "no_shadow"),
            ("/v1/routes/iris/shadow?limit=0", 400, "bad_request"),
            ("/v1/routes/iris/shadow?limit=101", 400, "bad_request"),
            ("/v1/routes/iris/shadow?limit=%C2%B2", 400, "bad_request"),
            ("/v1/routes/iris/shadow?limit=-1", 400, "bad_request"),
            ("/v1/routes/iris/shadow?limit=99999999999999999999", 400, "bad_request"),
            ("/v1/routes/iris/shadow?since=1", 400, "bad_request"),
            # (README, bad input: a query value given at most once)
            ("/v1/routes/iris/shadow?limit=5&limit=500", 400, "bad_request")):
        async with session.get(gateway.admin + path, headers=READ) as r:
            body = await r.json()
            assert (r.status, body["error"]["type"]) == (status, type_), (path, body)
    async with session.get(url, headers=READ) as r:
        assert r.status == 200


async def test_the_answer_has_the_contract_shape(gateway, session: ClientSession) -> None:  # type: ignore[no-untyped-def]
    for x in range(6):
        async with session.post(gateway.url + "/v2/models/iris/infer", data=v2_request(x)) as r:
            assert r.status == 200

    async def rep() -> dict:  # type: ignore[type-arg]
        async with session.get(gateway.admin + "/v1/routes/iris/shadow?limit=2",
                               headers=READ) as r:
            return dict(await r.json())

    out = await wait_until(lambda: _if(rep, lambda d: d["compared"] == 6), 10)
    assert {"version", "compared", "agreed", "agreement", "dropped", "disagreements"} <= set(out)
    assert (out["version"], out["compared"], out["agreed"], out["agreement"]) == ("v2", 6, 3, 0.5)
    assert len(out["disagreements"]) == 2  # the limit
    d = out["disagreements"][0]
    assert {"time", "request", "primary", "shadow"} <= set(d)
    assert out["gate"] == {"min_agreement": 0.9, "min_compared": 10, "compared": 6,
                           "agreed": 3, "failures": 0, "other_status": 0, "older_instances": 0,
                           "agreement": 0.5, "open": False,
                           "reason": out["gate"]["reason"]}
    assert "agreed with the primary on 3 of 6" in out["gate"]["reason"]
    async with session.get(gateway.admin + "/openapi.json") as r:
        doc = await r.json()
    op = doc["paths"]["/v1/routes/{route}/shadow"]["get"]
    assert op["x-scope"] == "killgate:read" and "404" in op["responses"]


async def _if(fetch, ok):  # type: ignore[no-untyped-def]
    d = await fetch()
    return d if ok(d) else None


async def test_a_shadow_below_the_gate_gets_no_traffic_from_promote_weights_or_rollback(
        gateway, session: ClientSession) -> None:  # type: ignore[no-untyped-def]
    for x in range(20):
        for name in ("iris", "good"):
            async with session.post(f"{gateway.url}/v2/models/{name}/infer",
                                    data=v2_request(x)) as r:
                assert r.status == 200

    async def compared(route: str) -> bool:
        async with session.get(f"{gateway.admin}/v1/routes/{route}/shadow",
                               headers=READ) as r:
            return bool((await r.json())["compared"] == 20)

    await wait_until(lambda: compared("iris"), 10)
    await wait_until(lambda: compared("good"), 10)
    base = gateway.admin + "/v1/routes/iris"
    gen = gateway.gw.holder.doc.generation
    for method, path, body in (
            ("POST", "/promote", {"version": "v2", "reason": "looks fine"}),
            ("PUT", "/weights", {"weights": {"v1": 90, "v2": 10}, "reason": "canary"}),
            ("POST", "/rollback", {"to": "v2", "reason": "try it"})):
        async with session.request(method, base + path, json=body, headers=ROLLOUT) as r:
            out = await r.json()
            assert r.status == 409, out
            assert out["error"]["type"] == "shadow_agreement"
            assert "agreed with the primary on 10 of 20 compared requests (50.0%)" in \
                out["error"]["message"] and "min_shadow_agreement needs 90.0%" in \
                out["error"]["message"]
    assert gateway.gw.holder.doc.generation == gen  # nothing changed
    # a change that gives the shadow nothing is not gated
    async with session.put(base + "/weights", json={"weights": {"v1": 100, "v2": 0},
                                                    "reason": "pin"}, headers=ROLLOUT) as r:
        assert r.status == 200, await r.text()
    # the shadow that agrees on every request may become a canary
    async with session.put(gateway.admin + "/v1/routes/good/weights", headers=ROLLOUT,
                           json={"weights": {"v1": 90, "v2": 10}, "reason": "canary"}) as r:
        assert r.status == 200, await r.text()
    plan = gateway.gw.holder.table.by_name["good"]
    assert plan.shadow is None and plan.shadow_off == "serving"
    assert plan.effective_weights() == {"v1": 90.0, "v2": 10.0}


async def test_status_says_whether_each_shadow_is_mirrored(gateway, session: ClientSession) -> None:  # type: ignore[no-untyped-def]
    async with session.post(gateway.admin + "/v1/kill", headers=auth("killgate:kill"), json={
            "scope": "version", "route": "good", "version": "v2", "reason": "off"}) as r:
        assert r.status == 200
    async with session.get(gateway.admin + "/v1/status", headers=READ) as r:
        routes = (await r.json())["routes"]
    assert routes["iris"]["shadow"] == {"version": "v2", "sample": 1.0, "mirroring": True,
                                        "off": None}
    assert routes["good"]["shadow"]["mirroring"] is False
    assert routes["good"]["shadow"]["off"] == "killed"
    assert routes["plain"]["shadow"] is None


async def test_status_says_a_shadow_at_sample_0_mirrors_nothing(tmp_path: Path, backends: Start,
                                                                session: ClientSession) -> None:
    """`sample: 0` parks a shadow (no copy is sent): /v1/status said `mirroring: true`."""
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2"))
    cfg = write_config(tmp_path, f"""\
- name: r
  match: {{path_prefix: /r}}
  stable: v1
  shadow: {{version: v2, sample: 0}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
""")
    async with running_gateway(cfg) as gw, \
            session.get(gw.admin + "/v1/status", headers=READ) as r:
        shadow = (await r.json())["routes"]["r"]["shadow"]
    assert shadow == {"version": "v2", "sample": 0.0, "mirroring": False, "off": "sample_zero"}


async def test_the_gate_holds_for_break_glass_and_two_person_requests(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """Break-glass skips approvals, never the shadow gate; a two-person request for a change
    the gate refuses is refused when asked, and a stored one (asked while the gate was open,
    say) is refused at its last approval and stays open."""
    import time

    from gateway.admin import actions
    from gateway.admin.approvalrecord import Approval
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "change" if x % 2 else "noise"))  # 50%
    cfg = write_config(tmp_path, routes(p1, p2, p2), extra="approvals: {weights: 2}\n")
    async with running_gateway(cfg) as g:
        url = g.admin + "/v1/routes/iris/weights"
        canary = {"weights": {"v1": 90, "v2": 10}, "reason": "canary"}
        glass = auth("killgate:rollout killgate:breakglass")
        async with session.put(url, json={**canary, "break_glass": True}, headers=glass) as r:
            out = await r.json()
            assert (r.status, out["error"]["type"]) == (409, "shadow_agreement"), out
        async with session.put(url, json=canary, headers=ROLLOUT) as r:
            out = await r.json()
            assert (r.status, out["error"]["type"]) == (409, "shadow_agreement"), out
        assert g.gw.holder.doc.approvals == {}  # nothing was asked for
        loaded = g.gw.holder.loaded.config
        intent = actions.intent("weights", canary, "iris", loaded, "alice", "canary")
        now = time.time()
        rec = Approval("ap-00000000000000aa", "weights", intent, intent.change_hash(), 2,
                       ("alice",), now, now + 600)
        await g.gw.sync.write(lambda cur: Change(approvals={rec.id: rec.to_json()}),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": rec.id}, "canary"))
        gen = g.gw.holder.doc.generation
        token = admin_token("killgate:rollout", "bob", 600)
        bob = {"Authorization": f"Bearer {token}"}
        async with session.post(g.admin + f"/v1/approvals/{rec.id}/approve", json={},
                                headers=bob) as r:
            out = await r.json()
            assert (r.status, out["error"]["type"]) == (409, "shadow_agreement"), out
        doc = g.gw.holder.doc
        assert doc.generation == gen and rec.id in doc.approvals and "iris" not in doc.overrides


def test_the_report_is_strict_json_whatever_a_kept_body_holds() -> None:
    """A backend's answer `{"score": NaN}` is read by Python's json as a float NaN and kept
    in a disagreement: the report then carried a bare `NaN`, and a strict reader (the
    browser's JSON.parse, Go, jq --strict) refused the whole report."""
    report = {"agreement": 0.5, "disagreements": [{"shadow": {"body": {
        "score": float("nan"), "hi": float("inf"), "lo": [float("-inf"), 1.5]}}}]}
    text = strict_dumps(report)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "agreement": 0.5, "disagreements": [{"shadow": {"body": {
            "score": "NaN", "hi": "Infinity", "lo": ["-Infinity", 1.5]}}}]}
    assert strict_dumps({"a": 1}) == json.dumps({"a": 1})
