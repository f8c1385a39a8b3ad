"""Refused store data is counted every time, logged at most once per kind per interval."""

from __future__ import annotations

import logging

import pytest

from gateway.log import _FIELDS
from gateway.state.tamper import TamperLog
from gateway.telemetry.metrics import Metrics


def test_a_flood_of_forgeries_is_counted_but_logged_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    t = TamperLog(m, interval=3600)
    with caplog.at_level(logging.ERROR, "killgate.state"):
        for i in range(1000):
            t.note("push", f"forgery {i}")
        t.note("ack", "forged ack")
    assert m.get("killgate_state_unverified_total", ("push",)) == 1000
    assert m.get("killgate_state_unverified_total", ("ack",)) == 1
    assert len([r for r in caplog.records if r.getMessage() == "state_unverified"]) == 2
    st = t.status()
    assert st["unverified"] == {"push": 1000, "ack": 1} and st["unverified_total"] == 1001
    assert st["last_unverified"]["kind"] == "ack"
    t.accepted_previous("state")
    assert t.status()["accepted_with_previous_key"] == {"state": 1}
    assert m.get("killgate_state_previous_key_total", ("state",)) == 1


def test_the_next_interval_logs_again_with_the_number_suppressed(
        caplog: pytest.LogCaptureFixture) -> None:
    t = TamperLog(Metrics(), interval=0.0)
    with caplog.at_level(logging.ERROR, "killgate.state"):
        t.note("state", "a")
        t.note("state", "b")
    assert len([r for r in caplog.records if r.getMessage() == "state_unverified"]) == 2


def test_a_wrong_signature_is_logged_even_after_a_made_up_key_id_of_its_kind(
        caplog: pytest.LogCaptureFixture) -> None:
    """Suppression is per kind and cause: a forger's unknown-key-id value logged first kept
    a wrong-MAC write of the same kind out of the log for the interval."""
    t = TamperLog(Metrics(), interval=3600)
    with caplog.at_level(logging.ERROR, "killgate.state"):
        t.note("push", "signed with an unknown key id '0badc0de'", "unknown_key_id")
        t.note("push", "its signature does not match its content", "bad_signature")
        t.note("push", "signed with an unknown key id '0badc0de'", "unknown_key_id")
    logged = [r for r in caplog.records if r.getMessage() == "state_unverified"]
    assert [getattr(r, _FIELDS)["cause"] for r in logged] == ["unknown_key_id", "bad_signature"], logged
    st = t.status()
    assert st["by_cause"] == {"unknown_key_id": 2, "bad_signature": 1}
    assert st["last_by_cause"]["bad_signature"]["problem"].startswith("its signature")


@pytest.mark.parametrize(("cause", "line"), [("other", "state_unverified"),
                                             ("retired", "state_retired_key")])
def test_the_line_after_an_interval_says_how_many_were_suppressed(
        caplog: pytest.LogCaptureFixture, cause: str, line: str) -> None:
    """Tampering and a retired key's left-overs alike: one line per interval, the next
    saying how many it kept out of the log."""
    t = TamperLog(Metrics(), interval=3600)
    with caplog.at_level(logging.WARNING, "killgate.state"):
        for i in range(3):
            t.note("heartbeat", f"refused {i}", cause)  # type: ignore[arg-type]
        t.interval = 0.0  # (the interval has passed)
        t.note("heartbeat", "refused 3", cause)  # type: ignore[arg-type]
    logged = [getattr(r, _FIELDS)["suppressed_since_last"] for r in caplog.records
              if r.getMessage() == line]
    assert logged == [0, 2], logged
