"""W3C traceparent parsing and formatting (telemetry/w3c.py), without sockets."""

from __future__ import annotations

import pytest

from gateway.telemetry.w3c import format_traceparent, parse_traceparent, trace_id_hex

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_parses() -> None:
    p = parse_traceparent(GOOD)
    assert p is not None and p.sampled
    assert trace_id_hex(p.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert p.span_id == 0x00F067AA0BA902B7
    assert format_traceparent(p.trace_id, p.span_id, True) == GOOD
    assert not parse_traceparent(GOOD[:-2] + "00").sampled  # type: ignore[union-attr]
    assert parse_traceparent(" " + GOOD + " ") == p  # OWS around the value


def test_a_future_version_with_more_fields_parses_its_known_part() -> None:
    assert parse_traceparent("cc" + GOOD[2:] + "-what-ever") is not None
    assert parse_traceparent("cc" + GOOD[2:] + "x") is None


@pytest.mark.parametrize("bad", [
    None, "", "garbage", GOOD[:-1], GOOD + "-", GOOD.upper(), "ff" + GOOD[2:],
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + "0" * 10_000,
])
def test_anything_malformed_is_no_parent(bad: str | None) -> None:
    assert parse_traceparent(bad) is None
