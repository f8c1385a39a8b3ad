"""`killgate status` and the write commands, read as an operator reads them: the store
line in words, and a duration without its unit refused before anything is sent."""

from __future__ import annotations

import pytest

from gateway.cli.admin import _status_text
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)


def _status(connected: object) -> dict[str, object]:
    return {"instance": "gw-1", "generation": 7, "config": {"digest": "sha256:" + "0" * 64},
            "store": {"backend": "redis", "connected": connected, "staleness_ms": 12,
                      "policy": "fail_static"}}


@pytest.mark.parametrize(("connected", "said"), [
    (True, "store redis reachable, state 12 ms old, on_unavailable fail_static"),
    (False, "store redis UNREACHABLE, state 12 ms old"),
    (None, "store redis reach unknown"),
])
def test_the_store_line_says_whether_it_is_reachable(connected: object, said: str) -> None:
    first = _status_text(_status(connected)).splitlines()[0]
    assert said in first and "connected=" not in first and "True" not in first, first


@pytest.mark.parametrize("cmd", [
    ["kill", "--route", "iris", "--reason", "r", "--wait", "5"],
    ["unkill", "--route", "iris", "--reason", "r", "--wait", "five"],
    ["rollback", "iris", "--reason", "r", "--wait", "5"],
])
async def test_a_wait_without_its_unit_is_refused_before_anything_is_sent(cmd: list[str]) -> None:
    """`--wait 5` went to the API, which refused it; the CLI now says so itself (exit 2,
    argparse's), without calling: the admin URL here answers nothing at all."""
    res = await acli(*cmd, env={"KILLGATE_ADMIN_URL": "http://127.0.0.1:9",
                                "KILLGATE_TOKEN": "x.y.z"})
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "--wait" in res.stderr and "is not a duration" in res.stderr, res.stderr
    assert "127.0.0.1:9" not in res.stderr and "reach" not in res.stderr, res.stderr


@pytest.mark.parametrize("cmd", [
    ["kill", "--route", "iris", "--reason", "r", "--wait", "2m"],
    ["rollback", "iris", "--reason", "r", "--wait", "31s"],
])
async def test_a_wait_longer_than_the_api_takes_is_refused_before_anything_is_sent(
        cmd: list[str]) -> None:
    """`killgate kill ... --wait 2m` went to the API, which refused the whole write (wait
    at most 30s): the kill was not made. The CLI says so before calling."""
    from gateway.admin.inputs import MAX_WAIT
    from gateway.cli.writes import MAX_WAIT as CLI_MAX_WAIT
    assert CLI_MAX_WAIT == MAX_WAIT
    res = await acli(*cmd, env={"KILLGATE_ADMIN_URL": "http://127.0.0.1:9",
                                "KILLGATE_TOKEN": "x.y.z"})
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "--wait" in res.stderr and "at most 30s" in res.stderr, res.stderr
    assert "127.0.0.1:9" not in res.stderr and "reach" not in res.stderr, res.stderr


@pytest.mark.parametrize(("drill", "said"), [
    (None, "iris (latched) "),
    ({"id": "d-1", "over_latch": False}, "iris (latched: drill d-1) "),
    ({"id": "d-1", "over_latch": True}, "iris (latched: drill d-1, over latch) "),
])
def test_the_routes_table_says_which_latch_is_an_open_drills(drill: object, said: str) -> None:
    """A drill's rollback read as an operator's latch: the table now names the drill (its
    restore undoes it; over latch: it puts the operator's back), as `diff` tells them."""
    st = {**_status(True), "routes": {"iris": {
        "stable": "v1", "latched": True,
        "override": {"kind": "rollback", "stable": "v1", "weights": {"v1": 100.0},
                     "actor": "dana", "reason": "r", "time": "t", "drill": drill},
        "versions": {"v1": {"configured_weight": 100, "effective_weight": 100,
                            "healthy": True, "killed": False}}}}}
    assert said in _status_text(st), _status_text(st)


def test_the_routes_table_says_each_weight_column_s_unit() -> None:
    """`config w` 40 beside `effective w` 50 read as one unit; they are not: the file's
    relative weight (2:3 here) and the percent of the route's traffic each gets now. The
    headers now say so (`weight`, `share %`), with the numbers under the right one."""
    st = {**_status(True), "routes": {"iris": {"stable": "v1", "latched": False, "versions": {
        "v1": {"configured_weight": 40, "effective_weight": 40, "healthy": True,
               "killed": False},
        "v2": {"configured_weight": 60, "effective_weight": 60, "healthy": True,
               "killed": False},
        "v3": {"configured_weight": 2, "effective_weight": 0, "healthy": False,
               "killed": False}}}}}
    lines = _status_text(st).splitlines()
    head = next(line for line in lines if line.startswith("route"))
    assert head.split()[:5] == ["route", "version", "weight", "share", "%"], head
    assert "config w" not in head and "effective w" not in head, head
    v3 = next(line for line in lines if line.split()[:2] == ["iris", "v3"])
    # each number under its own header
    assert v3[head.index("weight"):].split()[0] == "2", (head, v3)
    assert v3[head.index("share %"):].split()[0] == "0", (head, v3)


def test_a_config_change_not_yet_audited_is_said() -> None:
    """A reload whose `config.reload` event waits for the store (control/reloadaudit.py)."""
    st = _status(False)
    st["config"] = {"digest": "sha256:" + "1" * 64, "audit_pending": [
        {"from": "sha256:" + "0" * 64, "to": "sha256:" + "1" * 64,
         "changed_at": "2026-12-07T00:09:02.199Z", "tries": 3,
         "error": "redis did not answer in time", "event_sent": None}]}
    lines = [ln for ln in _status_text(st).splitlines() if ln.startswith("AUDIT PENDING")]
    assert len(lines) == 1 and "changed at 2026-12-07T00:09:02.199Z" in lines[0] \
        and "3 tries" in lines[0] and "did not answer" in lines[0], lines


@pytest.mark.parametrize(("health", "said"), [
    ({"ejected_for_s": 26.4, "ejected_cause": "5xx", "probe_healthy": True},
     "NO (ejected for 5xx, 26s left)"),
    ({"ejected_for_s": 9.0, "ejected_cause": "not_ready"}, "NO (ejected for not_ready, 9s left)"),
    # an instance before the cause was reported (a fleet mid-upgrade) says no cause
    ({"ejected_for_s": 9.0, "probe_healthy": True}, "NO (ejected, 9s left)"),
    ({"ejected_for_s": 0.0, "ejected_cause": None, "probe_healthy": False}, "NO (health checks)"),
])
def test_the_healthy_cell_says_what_ejected_a_version(health: dict[str, object], said: str) -> None:
    from gateway.cli.statuscells import healthy_cell
    assert healthy_cell({"healthy": False, "health": health}) == said
