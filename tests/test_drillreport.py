"""What a drill measured (domain/drillreport.py), its verdict (domain/drillverdict.py) and
its summary (domain/drillsummary.py), all pure: synthetic timelines with known answers."""

from __future__ import annotations

import asyncio
import time

from gateway.control.drillrestore import END_MARGIN
from gateway.control.drills import DrillRunner
from gateway.domain.drillplan import Plan, duration
from gateway.domain.drillreport import (
    Marks,
    Obs,
    analyse,
    percentiles,
    steady_problems,
    unrestored,
)
from gateway.domain.drillsummary import markdown
from gateway.domain.drillverdict import verdict

RATE = 10.0  # one request per 100 ms per instance


def timeline(instance: str, until: float, answer) -> list[Obs]:  # type: ignore[no-untyped-def]
    """One request every 100 ms from t=0; `answer(t)` gives (status, version, decision)."""
    out = []
    t = 0.0
    while t < until:
        status, version, decision = answer(t)
        out.append(Obs(instance, t, t + 0.005, status, version, decision))
        t = round(t + 1 / RATE, 3)
    return out


def kill_plan(**kw: object) -> Plan:
    return Plan.model_validate({"kind": "kill", "route": "r", "version": "v2", "rate": RATE,
                                **kw})


MARKS = Marks(steady=(0.0, 1.0), inject_sent=1.0, inject_done=1.3, restore_sent=3.0,
              restore_done=3.1, end=4.0)


def killed_at(t_kill: float, t_back: float = 3.05):  # type: ignore[no-untyped-def]
    def answer(t: float) -> tuple[int, str, str]:
        if t_kill <= t < t_back:
            return 200, "v1", "failover"
        return 200, "v2", "pinned"
    return answer


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([]) == {"p50": None, "p99": None, "max": None}
    assert percentiles([5.0]) == {"p50": 5.0, "p99": 5.0, "max": 5.0}
    xs = [float(i) for i in range(1, 101)]
    assert percentiles(xs) == {"p50": 50.0, "p99": 99.0, "max": 100.0}


def test_time_to_kill_per_instance_leaks_and_restore() -> None:
    plan = kill_plan()
    obs = timeline("a", 4.0, killed_at(1.2)) + timeline("b", 4.0, killed_at(1.45))
    m = analyse(plan, None, obs, MARKS)
    rows = {r["instance"]: r for r in m["instances"]}
    assert rows["a"]["time_to_kill_ms"] == 205.0  # the answer to the request sent at 1.2
    # b applied late: its answers at 1.3 and 1.4 (after the receipt at 1.3) are leaks
    assert rows["b"]["time_to_kill_ms"] == 505.0 and rows["b"]["leaks"] == 2
    assert m["leaks"] == 2 and m["errors"] == 0
    assert m["time_to_kill_ms"] == {"p50": 205.0, "p99": 505.0, "max": 505.0}
    assert rows["a"]["time_to_restore_ms"] == 105.0  # first v2 answer: sent at 3.1
    assert rows["a"]["resolution_ms"] == 100.0
    got, why = verdict(plan, m, True, None, [])
    assert got == "failed" and why == ["2 leak(s) > target 0"]


def test_route_kill_counts_killed_answers_but_not_as_errors() -> None:
    plan = kill_plan(version=None, scope="route")

    def answer(t: float) -> tuple[int, str | None, str]:
        return (503, None, "killed") if 1.1 <= t < 3.05 else (200, "v1", "weighted")
    m = analyse(plan, None, timeline("a", 4.0, answer), MARKS)
    assert m["errors"] == 0 and m["leaks"] == 0
    assert m["instances"][0]["time_to_kill_ms"] == 105.0
    assert verdict(plan, m, True, None, []) == ("passed", [])


def test_errors_and_missed_targets_fail_the_drill() -> None:
    plan = kill_plan(targets={"time_to_kill_ms": {"p99": 100}})

    def answer(t: float) -> tuple[int, str | None, str | None]:
        if 1.5 <= t < 1.7:
            return 0, None, None  # no answer at all
        return killed_at(1.2)(t)
    m = analyse(plan, None, timeline("a", 4.0, answer), MARKS)
    assert m["errors"] == 2
    got, why = verdict(plan, m, False, None, [])
    assert got == "failed"
    assert why == ["time_to_kill_ms p99 205 ms > target 100 ms", "2 error(s) > target 0",
                   "the fleet is not as it was before the drill"]


def test_an_instance_that_never_shows_the_kill_fails_the_drill() -> None:
    plan = kill_plan()
    m = analyse(plan, None, timeline("a", 4.0, killed_at(99)), MARKS)
    assert m["instances"][0]["time_to_kill_ms"] is None
    got, why = verdict(plan, m, True, None, [])
    assert got == "failed" and "a: never showed the kill" in why[0]


def test_the_fleets_times_do_not_leave_out_an_instance_that_never_got_there() -> None:
    """One instance of three never showed the kill (it never applied it) and one never
    showed the state from before after the restore (the restore not applied there: the
    kill still in force). The fleet's max time to kill and to restore, what the summary,
    `drill history` and killgate_drill_last_seconds (the slowest instance) carry, came
    out as the slowest of the instances that did: 505 ms and 105 ms, a drill that found
    a kill stuck on an instance reading as a fast one. Such an instance is slower than any
    time: the ranks it takes are not measured (None), never a smaller number."""
    plan = kill_plan()
    obs = (timeline("a", 4.0, killed_at(1.2)) + timeline("b", 4.0, killed_at(1.45))
           + timeline("c", 4.0, killed_at(99)) + timeline("d", 4.0, killed_at(1.2, 99)))
    m = analyse(plan, None, obs, MARKS)
    rows = {r["instance"]: r for r in m["instances"]}
    assert rows["c"]["time_to_kill_ms"] is None and rows["d"]["time_to_restore_ms"] is None
    assert m["time_to_kill_ms"] == {"p50": 205.0, "p99": None, "max": None}
    assert m["time_to_restore_ms"]["max"] is None
    assert percentiles([None, 5.0]) == {"p50": 5.0, "p99": None, "max": None}
    # not injected (stopped in the steady window): nothing to rank, as before
    assert analyse(plan, None, obs, Marks())["time_to_kill_ms"] == percentiles([])


def test_aborted_wins_over_everything() -> None:
    plan = kill_plan()
    m = analyse(plan, None, [], MARKS)
    assert verdict(plan, m, True, "interrupted (SIGINT)", []) == (
        "aborted", ["interrupted (SIGINT)"])


def test_rollback_is_done_when_every_later_answer_comes_from_the_target() -> None:
    plan = Plan.model_validate({"kind": "rollback", "route": "r", "rate": RATE})

    def answer(t: float) -> tuple[int, str, str]:
        if 1.0 <= t < 3.05:  # v2 answers twice more after the call (at 1.1 and 1.4)
            return 200, "v2" if t in (1.1, 1.4) else "v1", "weighted"
        return 200, "v2" if int(t * 10) % 2 else "v1", "weighted"
    m = analyse(plan, "v1", timeline("a", 4.0, answer), MARKS)
    row = m["instances"][0]
    assert row["time_to_rollback_ms"] == 505.0  # the answer to 1.5, after the last v2
    assert row["leaks"] == 1  # the v2 answer to the request sent at 1.4 (after the receipt)
    assert row["time_to_restore_ms"] == 5.0 + 100.0  # first v2 answer after 3.0: sent 3.1
    assert row["resolution_ms"] == 200.0  # half the answers come from v2


def test_failover_measures_answers_moved_to_another_version() -> None:
    plan = Plan.model_validate({"kind": "failover", "route": "r", "version": "v2",
                                "rate": RATE})
    m = analyse(plan, None, timeline("a", 4.0, killed_at(1.2)), MARKS)
    assert m["instances"][0]["time_to_failover_ms"] == 205.0
    assert m["instances"][0]["showed"] == 19  # 1.2 … 3.0, sent before the restore reached it


def test_steady_state_problems_name_the_instance_and_the_reason() -> None:
    plan = kill_plan()
    ok = timeline("a", 1.0, killed_at(99))
    assert steady_problems(plan, None, ok, ["a"], (0.0, 1.0)) == []
    assert "b: answered 0" in steady_problems(plan, None, ok, ["a", "b"], (0.0, 1.0))[0]
    failing = timeline("a", 1.0, lambda t: (502, "v2", "pinned"))
    assert "failed or were killed" in steady_problems(plan, None, failing, ["a"], (0.0, 1.0))[0]
    moved = timeline("a", 1.0, killed_at(0.5))
    assert "already fail over" in steady_problems(plan, None, moved, ["a"], (0.0, 1.0))[0]
    no_v2 = timeline("a", 1.0, lambda t: (200, "v1", "weighted"))
    assert "no drill request reached v2" in steady_problems(plan, None, no_v2, ["a"],
                                                            (0.0, 1.0))[0]
    rb = Plan.model_validate({"kind": "rollback", "route": "r", "rate": RATE})
    assert "already comes from v1" in steady_problems(rb, "v1", no_v2, ["a"], (0.0, 1.0))[0]


def test_markdown_summary_has_every_instance_and_the_targets() -> None:
    plan = kill_plan()
    m = analyse(plan, None, timeline("a", 4.0, killed_at(1.2)), MARKS)
    report = {"id": "d-1", "kind": "kill", "verdict": "passed", "reasons": [], "route": "r",
              "version": "v2", "started": "s", "finished": "f", "restored": True,
              "rate": RATE, "targets": plan.targets.model_dump(), **m}
    md = markdown(report)
    assert "# Drill d-1: kill on `r` / `v2`: **PASSED**" in md
    assert "| a | ? | 40 | 205 | 0 | 0 | 105 | 100 |" in md  # (no build said: `?`)
    assert "| time to kill | 205 | 205 | 205 | max ≤ 2000 ms |" in md
    assert "**yes**" in md
    refused = markdown({"id": None, "kind": "kill", "verdict": "aborted", "route": "r",
                        "reasons": ["no"], "started": "s", "finished": "f"})
    assert "(not opened)" in refused and "- no" in refused


def test_an_answer_that_may_have_met_the_restore_is_no_leak() -> None:
    """A request sent just before the restore call and answered after the restore reached
    its instance rightly shows the state from before; it is no leak (it was counted as one:
    a slow answer failed a drill that had none)."""
    plan = kill_plan()
    obs = timeline("a", 4.0, killed_at(1.2))
    obs.append(Obs("a", 2.999, 3.2, 200, "v2", "pinned"))  # slow: answered after the restore
    m = analyse(plan, None, obs, MARKS)
    assert m["leaks"] == 0 and verdict(plan, m, True, None, []) == ("passed", [])
    # answered before the restore was asked for: a leak, however slow
    obs.append(Obs("a", 2.5, 2.99, 200, "v2", "pinned"))
    assert analyse(plan, None, obs, MARKS)["leaks"] == 1


def test_markdown_says_when_the_abort_watch_could_not_read_an_instance() -> None:
    """An instance whose /metrics the abort watch cannot read (a 421, a firewall): users'
    errors there can stop nothing. The JSON named it (abort.unreadable_metrics); the summary
    people read said nothing, and the drill PASSED as if guarded."""
    plan = kill_plan()
    m = analyse(plan, None, timeline("a", 4.0, killed_at(1.2)), MARKS)
    report = {"id": "d-1", "kind": "kill", "verdict": "passed", "reasons": [], "route": "r",
              "version": "v2", "started": "s", "finished": "f", "restored": True,
              "rate": RATE, "targets": plan.targets.model_dump(), **m,
              "abort": {"route": "iris", "threshold": 0.05, "worst_error_rate": 0,
                        "unreadable_metrics": ["http://10.0.0.6:8081"]}}
    md = markdown(report)
    assert "http://10.0.0.6:8081" in md and "abort" in md.lower(), md


def test_a_drill_stopped_by_a_kill_in_force_says_so_and_where_to_look() -> None:
    """The demo prints `kill --route iris`, then a drill of v2 on `iris-drill`: run in that
    order, the drill stopped with "50 of 50 drill requests failed or were killed before the
    injection (e.g. 503 killed)", without a word on why (the production route's kill holds
    on its drill route) or what to do. A backend's 502 is not taken for a kill."""
    plan = kill_plan()
    killed = timeline("a", 1.0, lambda t: (503, None, "killed"))
    said = steady_problems(plan, None, killed, ["a"], (0.0, 1.0))[0]
    assert "503 killed" in said and "a kill in force" in said, said
    assert "killgate status" in said and "lifted" in said, said
    mixed = timeline("a", 1.0, lambda t: (502, "v2", "pinned") if t < 0.5 else
                     (503, None, "killed"))
    said = steady_problems(plan, None, mixed, ["a"], (0.0, 1.0))[0]
    assert "e.g. 503 killed" in said and "a kill in force" in said, said
    failing = timeline("a", 1.0, lambda t: (502, "v2", "pinned"))
    said = steady_problems(plan, None, failing, ["a"], (0.0, 1.0))[0]
    assert "e.g. 502 pinned" in said and "kill in force" not in said, said


def test_a_steady_state_with_no_answer_says_so() -> None:
    """`--instances http://127.0.0.1:1` (nothing listens): the reason read '50 of 50 drill
    requests failed or were killed before the injection (e.g. 0 )'."""
    plan = kill_plan()
    silent = timeline("http://h:1", 1.0, lambda t: (0, None, None))
    said = steady_problems(plan, None, silent, ["http://h:1"], (0.0, 1.0))[0]
    assert "(e.g. no answer: nothing took the connection, or it did not answer in time; is " \
        "http://h:1 a killgate data plane that listens? (--instances))" in said, said
    failing = timeline("a", 1.0, lambda t: (502, "v2", "pinned"))
    assert "(e.g. 502 pinned)" in steady_problems(plan, None, failing, ["a"], (0.0, 1.0))[0]


def test_unrestored_names_the_instances_without_an_answer_from_before_since_the_restore() -> None:
    plan = kill_plan()
    back = timeline("a", 4.0, killed_at(1.1))  # v2 again from 3.05
    late = timeline("b", 4.0, killed_at(1.1, t_back=9.0))  # still failing over at 4.0
    assert unrestored(plan, None, back + late, MARKS) == ["b"]
    assert unrestored(plan, None, back, MARKS) == []
    assert unrestored(plan, None, back + late, Marks()) == []  # (no restore asked for yet)


async def test_the_settle_waits_for_a_slow_instance_up_to_the_restore_target() -> None:
    """After its settle, a drill waits for an instance that has not shown an answer from
    before the drill, up to time_to_restore's max target: one slow to come back (a
    store-loss drill's reconnect) is measured, not reported as never restored. (The waits
    that must end early are measured against a 5 s target with seconds of margin, so a
    loaded CI machine's stalls cannot fail them; only the give-up waits a target out.)"""
    long = kill_plan(targets={"time_to_restore_ms": {"max": 5000}})
    runner = DrillRunner(long, None, None, lambda _: None)  # type: ignore[arg-type]
    runner.marks.restore_sent = runner.now()
    runner.obs = [Obs("a", runner.now(), runner.now(), 200, "v1", "failover")]

    async def comes_back() -> None:
        await asyncio.sleep(0.3)
        runner.obs.append(Obs("a", runner.now(), runner.now(), 200, "v2", "pinned"))

    task = asyncio.create_task(comes_back())
    await runner._settle(0.05, None)
    waited = runner.now() - runner.marks.restore_sent
    await task
    assert 0.29 <= waited < 4.0, waited  # until the answer came, not the whole target
    short = kill_plan(targets={"time_to_restore_ms": {"max": 500}})
    runner = DrillRunner(short, None, None, lambda _: None)  # type: ignore[arg-type]
    runner.obs = [Obs("a", runner.now(), runner.now(), 200, "v1", "failover")]
    runner.marks.restore_sent = runner.now()
    await runner._settle(0.05, None)  # never comes back: given up at the target
    assert 0.49 <= runner.now() - runner.marks.restore_sent < 4.0
    runner = DrillRunner(long, None, None, lambda _: None)  # type: ignore[arg-type]
    runner.obs = [Obs("a", runner.now(), runner.now(), 200, "v1", "failover")]
    runner.stopped = "Ctrl-C"
    runner.marks.restore_sent = runner.now()
    await runner._settle(0.05, None)  # stopped early: the settle only
    assert runner.now() - runner.marks.restore_sent < 4.0
    # stopped (Ctrl-C) during that wait: it ends then, not at the target (5 s on)
    runner = DrillRunner(long, None, None, lambda _: None)  # type: ignore[arg-type]
    runner.obs = [Obs("a", runner.now(), runner.now(), 200, "v1", "failover")]
    runner.marks.restore_sent = runner.now()
    asyncio.get_running_loop().call_later(0.3, runner.stop, "Ctrl-C")
    await runner._settle(0.05, None)
    assert 0.29 <= runner.now() - runner.marks.restore_sent < 4.0


def test_a_restore_acknowledged_by_fewer_instances_than_the_drill_started_with_is_said() -> None:
    """A store-loss drill whose outage outlasted the leases restored 'applied by 1/1
    instance(s)' with three running, and the report's receipts.restore said the same,
    without a word that two were not counted (control/drillrejoin.short_receipt)."""
    from gateway.control.drillrejoin import short_receipt

    started = ["a", "b", "c"]
    assert short_receipt(started, {"instances": 3, "acked": 3, "pending": []}, []) is None
    assert short_receipt([], {"instances": 1, "acked": 1}, []) is None
    short = short_receipt(started, {"instances": 1, "acked": 1, "pending": []}, ["b", "c"])
    assert short is not None and short["acked"] == 1 and short["started_with"] == 3
    assert "acknowledged by 1 of the 3 instance(s)" in short["message"]
    assert "b, c" in short["message"], short
    # three acked, but one of them joined meanwhile (or came back under a new id): the one
    # the drill started with that is not back is still said
    also = short_receipt(started, {"instances": 3, "acked": 3, "pending": []}, ["c"])
    assert also is not None and also["not_back"] == ["c"], also
    assert "not heartbeating again after the store outage: c" in also["message"], also
    plan = kill_plan()
    m = analyse(plan, None, timeline("a", 4.0, killed_at(1.2)), MARKS)
    report = {"id": "d-1", "kind": "kill", "verdict": "passed", "reasons": [], "route": "r",
              "version": "v2", "started": "s", "finished": "f", "restored": True,
              "rate": RATE, "targets": plan.targets.model_dump(), **m, "restore_short": short}
    md = markdown(report)
    assert "WARNING: the restore was acknowledged by 1 of the 3 instance(s)" in md, md
    # an instance still running without the restore: named, whatever the count says
    late = short_receipt(started, {"instances": 3, "acked": 3, "pending": []}, [], ["b"])
    assert late is not None and late["behind"] == ["b"] and "still running" in late["message"]
    # one whose published address said so without a valid proof (a replayed heartbeat's
    # address?): said, as a warning, never `behind` (which fails the drill)
    unproved = short_receipt(started, {"instances": 2, "acked": 2, "pending": []}, [], [],
                             ["c"])
    assert unproved is not None and unproved["behind"] == [] and unproved["unverified"] == ["c"]
    assert "unproved (could not verify): c" in unproved["message"], unproved
    assert "a receipt counts live instances only" in unproved["message"], unproved


async def test_the_settle_does_not_rescan_the_whole_drill_while_it_waits() -> None:
    """The settle's wait asks every 50 ms which instances are not yet restored; it sorted
    and scanned every answer of the drill each time (360k at --rate 2000, 3 instances, a
    minute: ~90 ms a turn), on the loop the probe traffic it measures runs on. Each answer
    is now looked at once. (CPU time, not wall time: a loaded machine does not change it.)"""
    plan = kill_plan(rate=2000, targets={"time_to_restore_ms": {"max": 1000}})
    runner = DrillRunner(plan, None, None, lambda _: None)  # type: ignore[arg-type]
    runner.obs = [Obs(f"i{k % 3}", k / 6000, k / 6000 + 0.002, 200, "v1", "failover")
                  for k in range(150_000)]
    runner.marks.restore_sent = runner.now()
    cpu = time.process_time()
    await runner._settle(0.0, None)  # nobody comes back: waits the whole target
    assert time.process_time() - cpu < 0.25, time.process_time() - cpu


async def test_the_settle_never_waits_past_the_drills_own_deadline() -> None:
    """time_to_restore's max target has no upper bound: with one of 10 minutes and an
    instance that never comes back, the settle's wait ran past the deadline the drill asked
    for when it opened (its steady, hold and settle + 300 s), the fleet counted it overdue
    (killgate_drills_overdue, an alert) and closed it, and the drill's own end was then
    refused. The wait now ends a few seconds before that deadline."""
    plan = kill_plan(targets={"time_to_restore_ms": {"max": 600_000}})
    runner = DrillRunner(plan, None, None, lambda _: None)  # type: ignore[arg-type]
    runner.obs = [Obs("a", runner.now(), runner.now(), 200, "v1", "failover")]
    runner.marks.restore_sent = runner.now()
    runner.opened_at = runner.now() - duration(plan) + END_MARGIN + 0.3  # (0.3 s left)
    await asyncio.wait_for(runner._settle(0.05, None), 10)
    assert runner.now() - runner.marks.restore_sent < 5.0


def test_the_applied_line_counts_against_the_instances_the_drill_started_with() -> None:
    """'injected: generation N applied by 2/2 instance(s)' of a drill started with 3 (one
    lapsed: a receipt counts live instances only) read as the whole fleet having applied
    it (found by a drill review): said against the 3 where the counts differ."""
    from gateway.control.drillrejoin import applied_by

    three = ["a", "b", "c"]
    assert applied_by(three, {"instances": 3, "acked": 3}) == "3/3 instance(s)"
    assert applied_by(three, {"instances": 2, "acked": 2}) == (
        "2 of the 3 instance(s) the drill started with (the receipt counted 2 live)")
    assert applied_by(three, {"instances": 2, "acked": 1}).startswith(
        "1 of the 3 instance(s) the drill started with")
    assert applied_by(three, {"instances": 4, "acked": 4}) == (
        "4/4 instance(s) (the drill started with 3)")
    assert applied_by([], {"instances": 1, "acked": 1}) == "1/1 instance(s)"
    assert applied_by(three, None) == "None/None instance(s)"
