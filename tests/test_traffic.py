"""Traffic series for the console (gateway/domain/traffic.py): encode, decode, merge. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.domain.analysis import LATENCY_BOUNDS_MS
from gateway.domain.traffic import MAX_POINTS, decode, encode, local, merge

STEP = 5


def sample(requests: int, errors: int = 0, bucket: int = 0) -> list[Any]:
    """[requests, errors, histogram] with every request in one latency bucket."""
    hist = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    hist[bucket] = requests
    return [requests, errors, hist]


def buckets(points: dict[tuple[str, str], dict[int, list[Any]]]) -> dict:
    """WindowStats.buckets' shape: (route, version) -> [[start, n, err, hist], ...]."""
    return {k: [[start, *row] for start, row in sorted(v.items())] for k, v in points.items()}


def blob(instance: str, t: float, points: dict[tuple[str, str], dict[int, list[Any]]]) -> Any:
    b = decode(encode(instance, t, STEP, buckets(points)), STEP)
    assert b is not None
    return b


def test_encode_decode_round_trip_equals_the_local_shortcut() -> None:
    pts = {("iris", "v1"): {100: sample(7, 1, 3), 105: sample(2)}, ("iris", "v2"): {100: sample(1)}}
    b = blob("a", 111.5, pts)
    assert b.instance == "a" and b.t == 111.5
    assert b.points == {("iris", "v1"): {100: (7, 1, ((3, 7),)), 105: (2, 0, ((0, 2),))},
                        ("iris", "v2"): {100: (1, 0, ((0, 1),))}}
    assert local("a", 111.5, buckets(pts)) == b


def test_merge_sums_the_fleet_and_p99_comes_from_the_merged_histogram() -> None:
    fast = blob("a", 120, {("iris", "v1"): {100: sample(99, 0, 0)}})
    slow = blob("b", 120, {("iris", "v1"): {100: sample(2, 2, LATENCY_BOUNDS_MS.index(500))}})
    out = merge([fast, slow], until=120, window=30, step=STEP)
    assert out["t"] == [90, 95, 100, 105, 110, 115]
    s = out["routes"]["iris"]["v1"]
    i = out["t"].index(100)
    assert s["requests"][i] == 101 and s["errors"][i] == 2
    assert s["rps"][i] == pytest.approx(101 / STEP)
    assert s["error_rate"][i] == pytest.approx(round(2 / 101, 4))
    assert s["p99_ms"][i] == 500.0  # neither instance alone has this p99 (a: 1 ms)
    assert merge([fast], until=120, window=30, step=STEP)["routes"]["iris"]["v1"]["p99_ms"][i] == 1.0


def test_empty_buckets_have_no_rate_of_errors_and_no_p99() -> None:
    out = merge([blob("a", 120, {("iris", "v1"): {100: sample(3)}})], 120, 30, STEP)
    s = out["routes"]["iris"]["v1"]
    assert s["requests"][0] == 0 and s["error_rate"][0] is None and s["p99_ms"][0] is None


def test_only_whole_buckets_inside_the_window() -> None:
    pts = {("r", "v"): {80: sample(1), 95: sample(2), 115: sample(4), 120: sample(8)}}
    out = merge([blob("a", 122, pts)], until=122, window=25, step=STEP)
    assert out["end"] == 120 and out["t"] == [95, 100, 105, 110, 115]
    # 80 is older than the window; 120 is still filling (until=122): left out
    assert out["routes"]["r"]["v"]["requests"] == [2, 0, 0, 0, 4]


def test_a_p99_beyond_the_last_bound_is_reported_as_the_last_bound() -> None:
    out = merge([blob("a", 120, {("r", "v"): {100: sample(1, 0, len(LATENCY_BOUNDS_MS))}})],
                120, 30, STEP)
    assert out["routes"]["r"]["v"]["p99_ms"][2] == float(LATENCY_BOUNDS_MS[-1])


def _good() -> dict[str, Any]:
    return encode("a", 120.0, STEP, buckets({("iris", "v1"): {100: sample(3, 1, 2)}}))


def _row(**change: Any) -> dict[str, Any]:
    b = _good()
    row = b["routes"]["iris"]["v1"][0]
    for k, v in change.items():
        row[["start", "requests", "errors", "hist"].index(k)] = v
    return b


BAD: list[tuple[str, Any]] = [
    ("not an object", [1, 2]),
    ("another format", {**_good(), "format": 2}),
    ("another step", {**_good(), "step": 10}),
    ("t is NaN", {**_good(), "t": float("nan")}),
    ("t is a bool", {**_good(), "t": True}),
    ("t is text", {**_good(), "t": "120"}),
    ("routes not an object", {**_good(), "routes": []}),
    ("versions not an object", {**_good(), "routes": {"iris": [1]}}),
    ("rows not a list", {**_good(), "routes": {"iris": {"v1": {}}}}),
    ("a short point", {**_good(), "routes": {"iris": {"v1": [[100, 1, 0]]}}}),
    ("negative count", _row(requests=-1)),
    ("bool count", _row(requests=True)),
    ("float count", _row(requests=1.5)),
    ("huge count", _row(requests=10**13)),
    ("start off the step", _row(start=101)),
    ("errors above requests", _row(errors=9)),
    ("histogram not a list", _row(hist={"0": 1})),
    ("histogram entry malformed", _row(hist=[[0]])),
    ("no such histogram bucket", _row(hist=[[len(LATENCY_BOUNDS_MS) + 1, 1]])),
    ("empty version name", {**_good(), "routes": {"iris": {"": []}}}),
    ("long route name", {**_good(), "routes": {"r" * 65: {"v1": []}}}),
    ("no instance", {k: v for k, v in _good().items() if k != "instance"}),
    ("too many points", {**_good(), "routes": {"iris": {"v1": [[0, 0, 0, []]] * (MAX_POINTS + 1)}}}),
]


@pytest.mark.parametrize(("why", "raw"), BAD, ids=[b[0] for b in BAD])
def test_a_malformed_blob_is_dropped_whole(why: str, raw: Any) -> None:
    assert decode(raw, STEP) is None, why


def test_the_good_blob_the_bad_ones_start_from_decodes() -> None:
    assert decode(_good(), STEP) is not None
