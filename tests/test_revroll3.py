"""Traffic shifting from config files, third hostile review: `killgate diff` agrees with
what `serve` does with the same file, and a storm of reload signals stays bounded."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, wait_until, write_config

pytestmark = pytest.mark.timeout(60)


def _iris(p1: int, p2: int, art2: str, w2: int = 10) -> str:
    return f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 90, artifact: "sha256:aaaa"}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: {w2}, artifact: "{art2}"}}
"""


async def _reload(g: Any, cfg: Path, text: str, watch: list[float] | None = None) -> None:
    """Put `text` in place of `cfg` (by a rename, as a deploy does), reload and wait until
    it is applied; `watch`, if given, gets iris's v2 weight at each poll (every ms)."""
    tmp = cfg.with_name("next.tmp")
    tmp.write_text(text)
    old = g.gw.loaded.digest
    os.replace(tmp, cfg)
    g.gw.request_reload()

    def applied() -> bool:
        if watch is not None:
            watch.append(g.gw.holder.table.by_name["iris"].effective_weights()["v2"])
        return g.gw.loaded.digest != old
    await wait_until(applied, 10, interval=0.001 if watch is not None else 0.005,
                     what="the reload")


async def test_diff_refuses_a_changed_artifact_as_serve_does(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A file giving a running version name another artifact is refused by the gateway
    (versions are immutable); `killgate diff` against it listed the change and exited 2
    ("would change"), so a pipeline gating merges on diff merged a file the fleet refuses."""
    from tests.test_cli import acli

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _iris(p1, p2, "sha256:bbbb"))
    other = write_config(tmp_path, _iris(p1, p2, "sha256:cccc", 20), name="other.yaml")
    async with running_gateway(cfg) as g:
        await wait_until(lambda: "v2" in g.gw.holder.doc.identities.get("iris", {}), 10,
                         what="identities recorded")
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        res = await acli("diff", str(other), env=env)
        # what serve does with the same file
        cfg.write_text(other.read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None, 10,
                         what="the reload refused")
        assert "routes[0].versions[1].artifact" in g.gw.watcher.outcome.last_error
        assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
        assert "routes[0].versions[1].artifact" in res.stderr, res.stderr
        assert "sha256:bbbb" in res.stderr and "new version name" in res.stderr, res.stderr


def _many(p1: int, p2: int, n: int, w2: int = 10) -> str:
    return "".join(f"""\
- name: r{i}
  match: {{path_prefix: /m/r{i}}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 90}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: {w2}}}
""" for i in range(n))


async def test_a_storm_of_sighups_does_not_queue_a_read_each(tmp_path: Path, backends) -> None:
    """Every SIGHUP queued a reload of its own, each read and parsed in turn under the
    reload lock (a config of 120 routes takes a noticeable fraction of a second): a
    reloader sending SIGHUP in a loop piled up tasks without bound, each a read and a
    parse on a core the data plane shares (60 SIGHUPs: about 20 s of work here). SIGHUPs
    that arrive while one reload waits to read the file are that reload: it reads the
    newest file, so the last change still goes live."""
    import time

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _many(p1, p2, 120))
    async with running_gateway(cfg) as g:
        t0 = time.monotonic()
        g.gw.request_reload()
        await wait_until(lambda: not g.gw._reloads, 30, what="one reload")
        one = time.monotonic() - t0
        t1 = time.monotonic()
        for i in range(60):  # what 60 SIGHUPs do (the signal handler)
            g.gw.request_reload()
            if i == 30:  # a change the storm's reloads must not lose
                tmp = cfg.with_name("next.tmp")
                tmp.write_text(cfg.read_text().replace("weight: 10}", "weight: 30}", 1))
                os.replace(tmp, cfg)
            await asyncio.sleep(0.005)
        await wait_until(lambda: not g.gw._reloads, 60, what="the storm's reloads done")
        took = time.monotonic() - t1
        assert g.gw.loaded.config.routes[0].versions[1].weight == 30
        assert took < max(4.0, 6 * one), (took, one)


async def test_a_reload_that_changes_the_steps_does_not_jump_the_canary(
        tmp_path: Path, backends) -> None:
    """A rollout at step 2 of [1, 5, 50, 100] (5 %), and a reload giving steps [5, 50, 100]
    (the step already passed taken out): the step index stayed 1 and now meant 50 %, so
    the canary went from 5 % to 50 % at the reload, never judged in between (and a plan
    cut shorter than the step reached gave it 100 %, then promoted it). The rollout now
    goes on from the new plan's largest step not above the weight it was at."""
    from gateway.domain.analysis import Sample
    from tests.test_rollout import Flaky, route

    p1, p2 = await backends(Flaky("v1").app()), await backends(Flaky("v2").app())
    steps = ("  analysis: {window: 1s, interval: 100ms, min_requests: 3, "
             "steps: [1, 5, 50, 100], step_interval: 300ms}\n")
    cfg = write_config(tmp_path, route(p1, p2, 90, 10, steps))
    async with running_gateway(cfg) as g:
        rollout = g.gw.rollout

        async def passing(rc):  # type: ignore[no-untyped-def]
            return {"v1": Sample(100, 0), "v2": Sample(100, 0)}  # v2 as good as v1

        rollout._fleet_samples = passing  # type: ignore[method-assign]
        await wait_until(lambda: g.gw.holder.doc.progress.get("iris", {}).get("step") == 1,
                         10, what="the rollout at its second step (5 %)")

        async def inconclusive(rc):  # type: ignore[no-untyped-def]
            return {"v1": Sample(100, 0), "v2": Sample(0, 0)}

        # held at 5 % until the reload is in (a busy machine took longer than the 300 ms
        # step to apply it, and the rollout itself stepped to 50 %: not the bug)
        rollout._fleet_samples = inconclusive  # type: ignore[method-assign]
        later = steps.replace("[1, 5, 50, 100]", "[5, 50, 100]").replace("300ms", "1h")
        seen: list[float] = []
        await _reload(g, cfg, write_config(tmp_path, route(p1, p2, 90, 10, later),
                                           name="next.yaml").read_text(), seen)
        rollout._fleet_samples = passing  # type: ignore[method-assign]
        await asyncio.sleep(1.0)  # (rounds of the rollout on the new plan)
        seen.append(g.gw.holder.table.by_name["iris"].effective_weights()["v2"])
        assert max(seen) <= 5, seen
        assert g.gw.holder.doc.progress["iris"]["state"] == "running"
        assert rollout.status("iris")["progress"]["weight"] == 5


async def test_a_refused_config_stays_visible_in_metrics_until_fixed(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A GitOps change the gateway refuses left one increment of
    killgate_config_reload_rejected_total (and one log line): the file is not read again
    until it changes, so any rate or increase of the counter went back to 0 within its
    window while the fleet kept running the old config and the merged change was never
    applied. Nothing in /metrics said "the file on disk is refused" (as Prometheus's own
    prometheus_config_last_reload_successful does), and no shipped alert fired."""
    import re

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _iris(p1, p2, "sha256:bbbb"))
    good = cfg.read_text()

    async def gauge() -> float | None:
        async with session.get(g.admin + "/metrics") as r:
            text = await r.text()
        m = re.search(r"^killgate_config_refused(?:\{[^}]*\})? (\S+)$", text, re.M)
        return None if m is None else float(m.group(1))

    async with running_gateway(cfg) as g:
        assert await gauge() == 0
        cfg.write_text(good.replace("weight: 10", "weight: -1"))
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None, 10,
                         what="the refusal")
        assert await gauge() == 1
        cfg.write_text(good.replace("weight: 10", "weight: 20"))
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is None, 10, what="the fix")
        assert await gauge() == 0


async def test_a_new_canary_from_a_reload_starts_at_the_first_step(
        tmp_path: Path, backends) -> None:
    """With `steps`, a reload putting a new canary in (v3 for v2, weight 10 in the file, as
    the README's example has it) routed the file's 10 % to it until the route's next
    analysis round started its rollout at the first step (1 %), up to `interval` later:
    ten times the first step's traffic to a version nobody had judged, then its sticky
    users moved back off it (raising a canary must only ever move users onto it)."""
    from tests.test_rollout import Flaky, route

    ports = [await backends(Flaky(v).app()) for v in ("v1", "v2", "v3")]
    steps = ("  analysis: {window: 1s, interval: 1h, min_requests: 3, "
             "steps: [1, 50, 100], step_interval: 1h}\n")
    cfg = write_config(tmp_path, route(ports[0], ports[1], 90, 10, steps))
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.holder.doc.progress.get("iris", {}).get("canary")
                         == "v2", 10, what="v2's rollout started")
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 1
        await _reload(g, cfg, write_config(tmp_path, route(ports[0], ports[2], 90, 10, steps)
                                           .replace("name: v2", "name: v3"),
                                           name="next.yaml").read_text())
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v3"] == 1


async def test_diff_says_which_changes_wait_for_a_restart(tmp_path: Path) -> None:
    """`killgate diff` listed a changed `state` or `listen` like a weight, as something the
    merge would change; serve leaves them as it started until a restart (status then says
    RESTART REQUIRED), so a reviewer read a store or port move as done at the reload."""
    import json

    from tests.test_cli import acli

    a = write_config(tmp_path, _iris(9, 10, "sha256:bbbb"), listen="127.0.0.1:8080",
                     name="a.yaml")
    b = tmp_path / "b.yaml"
    b.write_text(a.read_text().replace("127.0.0.1:8080", "127.0.0.1:8090")
                 .replace("poll_interval: 50ms", "poll_interval: 100ms")
                 .replace("weight: 10", "weight: 20"))
    res = await acli("diff", str(b), "--against", str(a))
    assert res.returncode == 2, res.stderr
    assert "listen (at restart)" in res.stdout and "state.poll_interval (at restart)" \
        in res.stdout, res.stdout
    assert "weight v2 " in res.stdout and "weight v2 (at restart)" not in res.stdout
    assert "apply only when the gateway restarts" in res.stdout, res.stdout
    res = await acli("diff", str(b), "--against", str(a), "--json")
    assert json.loads(res.stdout)["restart_required"] == ["listen", "state.poll_interval"]


async def test_diff_names_a_kill_the_file_routes_around(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A kill stays on its name, and `killgate diff` warned only when the file dropped or
    renamed that name. A file keeping the name can still serve what the kill stops: a new,
    more specific route beside the killed one (premium users of a killed `iris`), or the
    killed version's backend under a new version name (v2 moved to another backend, v3
    added on v2's). Reviewed with diff before the merge, none of that was said."""
    import json

    from tests.conftest import bearer
    from tests.test_cli import acli

    p1, p2, p3 = [await backends(echo_app(v)) for v in ("v1", "v2", "v3")]
    cfg = write_config(tmp_path, _iris(p1, p2, "sha256:bbbb"))
    text = cfg.read_text()
    premium = text + f"""\
  - name: iris-premium
    match: {{path_prefix: /v2/models/iris, header: {{x-tier: premium}}}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 1}}
"""
    moved = (text.replace(f"http://127.0.0.1:{p2}", f"http://127.0.0.1:{p3}")
             .replace('artifact: "sha256:bbbb"}',
                      f'artifact: "sha256:bbbb"}}\n      - {{name: v3, url: "http://127.0.0.1:{p2}", '
                      'weight: 10}'))
    files = {}
    for name, body in (("premium", premium), ("moved", moved)):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(body)
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        for kill, file, says in (
                ({"scope": "route", "route": "iris"}, "premium", "route iris-premium (added)"),
                ({"scope": "version", "route": "iris", "version": "v2"}, "moved",
                 "is version v3 of route iris")):
            async with session.post(g.admin + "/v1/kill", headers=bearer("killgate:admin"),
                                    json={**kill, "reason": "bad answers"}) as r:
                assert r.status == 200, await r.text()
            res = await acli("diff", str(files[file]), env=env)
            assert res.returncode == 2, res.stderr
            assert "KILLS THIS FILE MAY ROUTE AROUND" in res.stdout and says in res.stdout, \
                res.stdout
            res = await acli("diff", str(files[file]), "--json", env=env)
            assert json.loads(res.stdout)["kills_routed_around"][0]["kill"] == \
                ("route:iris" if kill["scope"] == "route" else "version:iris:v2")
            async with session.post(g.admin + "/v1/unkill", headers=bearer("killgate:admin"),
                                    json={**kill, "reason": "next"}) as r:
                assert r.status == 200, await r.text()
        res = await acli("diff", str(files["premium"]), env=env)  # no kill: nothing said
        assert "ROUTE AROUND" not in res.stdout, res.stdout


async def test_a_reload_that_routes_around_a_kill_says_so(
        tmp_path: Path, backends, session: ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    """Applied anyway (the file is valid, and a kill is not a reason to refuse a config),
    such a reload logged nothing: the kill looked in force while premium users of the
    killed route were served."""
    import logging

    from tests.conftest import bearer

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _iris(p1, p2, "sha256:bbbb"))
    premium = cfg.read_text() + f"""\
  - name: iris-premium
    match: {{path_prefix: /v2/models/iris, header: {{x-tier: premium}}}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 1}}
"""
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=bearer("killgate:admin"),
                                json={"scope": "route", "route": "iris",
                                      "reason": "bad answers"}) as r:
            assert r.status == 200, await r.text()
        caplog.set_level(logging.WARNING)
        await _reload(g, cfg, premium)
        await wait_until(lambda: any(r.getMessage() == "kill_routed_around"
                                     and "iris-premium" in str(r.__dict__)
                                     for r in caplog.records), 5, what="the warning")


def test_status_marks_an_instance_running_another_config() -> None:
    """A reload refused on one instance (or on one worker of a group: each is an instance)
    and applied on the others showed only in the INSTANCES table's 19-character digests,
    to be told apart by eye at 3 a.m.; `killgate status` now says which run another config."""
    from gateway.cli.statuswarn import instance_rows

    st = {"instance": "a", "generation": 5, "config": {"digest": "sha256:" + "1" * 64},
          "instances": {"a": {"generation": 5, "config": "sha256:" + "1" * 64},
                        "b": {"generation": 5, "config": "sha256:" + "2" * 64},
                        "c": {"generation": 5, "config": "sha256:" + "1" * 64}}}
    rows = {r[0]: r[-1] for r in instance_rows(st, [])[1:]}
    assert rows["a"] == "" and rows["c"] == "", rows
    assert rows["b"].startswith("OTHER CONFIG than a"), rows


def test_a_less_specific_route_beside_a_killed_one_is_not_said_to_route_around_it() -> None:
    """Routing picks the most specific match: a catch-all route added beside a killed
    `iris` takes none of iris's requests, and crying wolf on it would teach reviewers to
    skip the warning."""
    from gateway.domain.killreach import kills_routed_around

    iris = {"name": "iris", "match": {"path_prefix": "/v2/models/iris"},
            "versions": [{"name": "v1", "url": "http://h:1"}]}
    kill = [{"scope": "route", "route": "iris", "actor": "ops", "reason": "bad"}]

    def route(name: str, **match: object) -> dict[str, object]:
        return {"name": name, "match": match, "versions": [{"name": "v1", "url": "http://h:2"}]}

    assert kills_routed_around(kill, [iris], [iris, route("all", path_prefix="/")]) == []
    assert kills_routed_around(kill, [iris], [iris, route("other", path_prefix="/v2/models/bert")]) == []
    said = kills_routed_around(kill, [iris], [iris, route("deep", path_prefix="/v2/models/iris/x")])
    assert said and "route deep (added)" in said[0]["how"][0], said


async def test_touching_the_running_file_is_not_a_refused_reload(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """An instance whose file lacks v1 when another instance (whose file has it) latches a
    rollback to v1 serves nothing on that route (NOT SERVING, KillgateOverrideUnservable).
    Any reload of its unchanged file then (a SIGHUP, a ConfigMap update of another key)
    was refused for the latch: LAST RELOAD FAILED with "a file without it would send its
    traffic to other versions" for the file already live, and the refused-config gauge
    and alert on top. Refusing the file that runs changes nothing: it is not refused."""
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change, RouteOverride

    p2 = await backends(echo_app("v2"))
    cfg = write_config(tmp_path, f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v2
  versions:
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 100}}
""")
    async with running_gateway(cfg) as g:
        # what another instance's rollback (its file has v1) writes to the shared store
        ov = RouteOverride("v1", {"v1": 100.0, "v2": 0.0}, "alice", "INC-1", "t", "rollback")
        await g.gw.sync.write(lambda cur: Change(overrides={"iris": ov}),
                              lambda cur, new: AuditDraft("alice", "rollback",
                                                          {"route": "iris"}, "INC-1"))
        await wait_until(lambda: g.gw.holder.table.by_name["iris"].override_unservable, 5,
                         what="the route not serving here")
        cfg.touch()
        g.gw.request_reload()
        await wait_until(lambda: not g.gw._reloads, 10, what="the reload")
        assert g.gw.watcher.outcome.last_error is None, g.gw.watcher.outcome.last_error
        assert g.gw.metrics.get("killgate_config_refused") == 0


def test_a_backend_shared_before_the_file_is_not_said_to_route_around_a_kill() -> None:
    """A killed version's backend that another route's version (its drill route, whose
    production kills hold on it, or a route serving the model under a second path) had
    before the file was named at every reload and every diff, whatever the file changed."""
    from gateway.domain.killreach import kills_routed_around

    def route(name: str, prefix: str, url: str, **more: object) -> dict[str, object]:
        return {"name": name, "match": {"path_prefix": prefix}, **more,
                "versions": [{"name": "v1", "url": "http://h:1"}, {"name": "v2", "url": url}]}

    running = [route("iris", "/iris", "http://h:2"),
               route("iris-drill", "/drill/iris", "http://h:2", drill_for="iris"),
               route("iris-alt", "/alt/iris", "http://h:2")]
    kill = [{"scope": "version", "route": "iris", "version": "v2", "actor": "a", "reason": "r"}]
    assert kills_routed_around(kill, running, running) == []
    moved = [*running, route("iris-new", "/new/iris", "http://h:2")]
    said = kills_routed_around(kill, running, moved)
    assert said and said[0]["how"] == ["its backend http://h:2 is version v2 of route iris-new"]


async def test_a_new_build_of_the_canary_under_its_name_rolls_out_anew(
        tmp_path: Path, backends) -> None:
    """revroll5: a rollout at step 2 of [1, 50, 100] (50 %), and a reload pointing the
    canary's name at a new build (another url: a fix pushed mid-rollout, or generic names
    such as `canary` reused). The record went by the name alone: the new build took 50 %
    at once, never judged, on the old step's clock (and, had that rollout been done, the
    file's weight for good, never stepped or promoted). It now rolls out anew from the
    first step, its url recorded."""
    from gateway.domain.analysis import Sample
    from tests.test_rollout import Flaky, route

    ports = [await backends(Flaky(v).app()) for v in ("v1", "v2", "v2b")]
    steps = ("  analysis: {window: 1s, interval: 100ms, min_requests: 3, "
             "steps: [1, 50, 100], step_interval: 300ms}\n")
    cfg = write_config(tmp_path, route(ports[0], ports[1], 90, 10, steps))
    async with running_gateway(cfg) as g:
        async def passing(rc):  # type: ignore[no-untyped-def]
            return {"v1": Sample(100, 0), "v2": Sample(100, 0)}

        g.gw.rollout._fleet_samples = passing  # type: ignore[method-assign]
        await wait_until(lambda: g.gw.holder.doc.progress.get("iris", {}).get("step") == 1,
                         10, what="the rollout at its second step (50 %)")
        seen: list[float] = []
        await _reload(g, cfg, write_config(tmp_path, route(ports[0], ports[2], 90, 10,
                                                           steps.replace("300ms", "1h")),
                                           name="next.yaml").read_text(), seen)
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 1, seen
        await wait_until(lambda: g.gw.holder.doc.progress["iris"].get("url")
                         == f"http://127.0.0.1:{ports[2]}", 5, what="the new rollout")
        assert g.gw.holder.doc.progress["iris"]["step"] == 0
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 1


def test_a_done_rollout_does_not_hold_off_a_new_build_under_its_name() -> None:
    """The pure side: a rollout `done` for `canary` at one url leaves the next build under
    that name at the first step (not the file's weight, unstepped); an older record without
    a url is taken as the same deployment (as before)."""
    from gateway.configfile import parse_config_text
    from gateway.domain.rolloutsteps import progressive_weights

    text = """
routes:
  - name: iris
    match: {path_prefix: /iris}
    stable: stable
    versions:
      - {name: stable, url: "http://h:1", weight: 90}
      - {name: canary, url: "http://h:3", weight: 10}
    analysis: {steps: [5, 50, 100]}
"""
    rc = parse_config_text(text).routes[0]
    done = {"canary": "canary", "step": 2, "since": 0.0, "state": "done",
            "steps": [5, 50, 100], "url": "http://h:2", "artifact": None}
    assert progressive_weights(rc, done) == {"stable": 95.0, "canary": 5.0}
    assert progressive_weights(rc, {**done, "url": "http://h:3"}) is None  # (that one: done)
    legacy = {k: v for k, v in done.items() if k not in ("url", "artifact")}
    assert progressive_weights(rc, legacy) is None
