"""Shadow tallies (domain/shadowstats.py): counting, the store's form, the fleet merge,
the report, disagreement records (the gate they feed: test_promotiongate.py). Pure: no
loop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config_shadow import NoiseConfig
from gateway.domain.comparison import Comparison, Difference
from gateway.domain.shadowreport import merge, report
from gateway.domain.shadowstats import (
    MAX_NOISE_PATHS,
    Tally,
)

DIFF = (Difference("values", "outputs[probs]"),)


def filled(version: str = "v2", spec: str = "s", keep: int = 3) -> Tally:
    t = Tally(version, spec, keep=keep)
    t.copy("sent", 6)
    t.copy("dropped")
    t.failed("timeout")
    for _ in range(3):
        t.outcome("agreed", (), 0.004, 0.006, {"length_change": 0.5})
    t.outcome("noise", (), 0.004, 0.006, {})
    for i in range(2):
        t.outcome("disagreed", DIFF, 0.004, 2.0, {})
        t.disagreement({"time": f"2030-01-01T00:00:0{i}Z", "request": i})
    t.outcome("uncomparable", (), 0.004, 0.006, {})
    return t


def test_counting_and_the_report() -> None:
    rep = report("iris", filled(), "v2_tensors", 0.5, 1)
    assert (rep["compared"], rep["agreed"], rep["agreement"], rep["dropped"]) == (6, 4, 0.666667, 1)
    assert rep["outcomes"] == {"agreed": 3, "noise": 1, "disagreed": 2, "uncomparable": 1}
    assert rep["copies"] == {"sent": 6, "dropped": 1, "body": 0, "answer": 0, "down": 0,
                             "failed": 1, "not_compared": 0}
    assert rep["failures"] == {"timeout": 1} and rep["differences"] == {"values": 2}
    assert rep["latency_ms"]["primary"] == {"p50": 5.0, "p99": 5.0}
    assert rep["latency_ms"]["shadow"]["p99"] == 2000.0
    assert rep["length_change"] == 0.5
    empty = report("iris", Tally("v2", "s"), "json", 1.0, 0)
    assert empty["agreement"] is None and empty["compared"] == 0


def test_the_disagreement_ring_is_bounded() -> None:
    t = Tally("v2", "s", keep=2)
    for i in range(5):
        t.disagreement({"time": str(i)})
    assert [d["time"] for d in t.disagreements] == ["3", "4"]
    none = Tally("v2", "s", keep=0)
    none.disagreement({"time": "x"})
    assert not none.disagreements


def test_noise_paths_are_learned_past_min_pairs_and_threshold() -> None:
    t = Tally("v2", "s")
    cfg = NoiseConfig(threshold=0.5, min_pairs=4)
    noisy = Comparison(True, (Difference("text", "choices[0].text"),))
    t.noise(noisy)
    t.noise(Comparison(False))  # uncomparable pairs teach nothing
    assert t.noisy_paths(cfg) == frozenset() and t.noise_pairs == 1
    for c in (noisy, Comparison(True), Comparison(True)):
        t.noise(c)
    assert t.noisy_paths(cfg) == {"choices[0].text"}  # 2 of 4 pairs; the shadow: never
    assert t.noisy_paths(NoiseConfig(threshold=0.6, min_pairs=4)) == frozenset()
    assert t.noisy_paths(None) == frozenset()
    # the shadow differs there about as often as the primary does with itself: noise
    for c in (noisy, noisy, Comparison(True), Comparison(True), Comparison(False)):
        t.observed(c)
    assert t.raw_n == 4 and t.noisy_paths(cfg) == {"choices[0].text"}
    # ... far more often (a real change on an unsure path): not noise
    for _ in range(6):
        t.observed(noisy)
    assert t.noisy_paths(cfg) == frozenset()  # 8 of 10 vs 2 of 4 (+20 % allowed)
    assert t.noisy_paths(NoiseConfig(threshold=0.5, min_pairs=4, relative=1.0)) == {
        "choices[0].text"}
    for i in range(MAX_NOISE_PATHS + 50):
        t.noise(Comparison(True, (Difference("value", f"p{i}"),)))
        t.observed(Comparison(True, (Difference("value", f"p{i}"),)))
    assert len(t.noise_paths) == MAX_NOISE_PATHS and len(t.raw_paths) == MAX_NOISE_PATHS


def test_the_store_form_round_trips_and_merges_only_its_own_kind() -> None:
    a, b = filled(), filled()
    back = Tally.from_json(json.loads(json.dumps(a.to_json())))
    assert back.to_json() == a.to_json()
    m = merge("v2", "s", [a, b, filled("v3"), filled(spec="other")])
    rep = report("iris", m, "json", 1.0, 2)
    assert (rep["compared"], rep["agreed"], rep["dropped"]) == (12, 8, 2)
    assert [d["time"] for d in rep["disagreements"]] == [
        "2030-01-01T00:00:01Z", "2030-01-01T00:00:01Z", "2030-01-01T00:00:00Z",
        "2030-01-01T00:00:00Z"]  # newest first
    assert m.primary_s == pytest.approx(2 * a.primary_s)


@pytest.mark.parametrize("mangle", [
    lambda d: d.pop("version"),
    lambda d: d.update(primary_ms=[1, 2, 3]),
    lambda d: d.update(shadow_ms="x"),
    lambda d: d.update(copies=[1]),
    lambda d: d.update(outcomes={"agreed": "many"}),
    lambda d: d.update(disagreements={"a": 1}),
    lambda d: d.update(disagreements=[1, 2]),
    lambda d: d.update(noise_pairs=None),
])
def test_a_malformed_blob_is_refused(mangle: Any) -> None:
    d = filled().to_json()
    mangle(d)
    with pytest.raises((ValueError, TypeError, KeyError)):
        Tally.from_json(d)


def test_a_path_whose_shadow_rate_was_not_tracked_is_not_noise() -> None:
    """Paths are tracked up to MAX_NOISE_PATHS (answers with arrays fill that in a few
    requests). Once the shadow's differing paths were full, a path it was not tracked on
    read as 'the shadow never differs there' and, the primary unsure there, became noise:
    every difference of the shadow at it excused, however often (hostile shadow review)."""
    t = Tally("v2", "s")
    cfg = NoiseConfig(threshold=0.05, min_pairs=10)
    for i in range(MAX_NOISE_PATHS):  # the shadow's first differences: array items
        t.observed(Comparison(True, (Difference("value", f"data[{i}].score"),)))
    label = Comparison(True, (Difference("value", "data[300].label"),))
    for i in range(20):  # the primary is unsure of the label in 1 pair of 20 ...
        t.noise(label if i == 0 else Comparison(True))
    for _ in range(50):  # ... and the shadow changes it every time
        t.observed(label)
    assert "data[300].label" not in t.raw_paths  # (full: not tracked)
    assert "data[300].label" not in t.noisy_paths(cfg)


def test_paths_come_back_from_the_store_as_kept() -> None:
    """The report reads every instance's counts from the store, its own too: paths were cut
    at 64 characters there (no mark), though kept up to 256, so the report's noise paths
    named other paths than its records, and two paths alike in their first 64 characters
    were summed as one (hostile shadow review)."""
    t = Tally("v2", "s")
    long = "outputs[sentence_embedding_projection_layer_output_normalized].datatype"
    t.noise(Comparison(True, (Difference("datatype", long),
                              Difference("shape", long.replace("datatype", "shape")))))
    back = Tally.from_json(json.loads(json.dumps(t.to_json())))
    assert back.noise_paths == t.noise_paths


def test_records_kept_as_text_merge_by_time_and_leave_older_readers_the_counts() -> None:
    """Records are kept and published as their JSON text, under "records": an instance of
    an older version takes only objects under "disagreements" (and refused the whole blob,
    counts too, when it held text), and the report shows them as objects, newest first."""
    from gateway.domain.disagreements import record_text

    new = Tally("v2", "s", keep=5)
    new.outcome("disagreed", DIFF, 0.004, 0.006, {})
    new.disagreement(record_text({"time": "2030-01-01T00:00:05Z", "request": {"x": 1},
                                  "primary": {"status": 200, "body": {"p": float("nan")}}}))
    blob = json.loads(json.dumps(new.to_json()))
    assert blob["disagreements"] == [] and len(blob["records"]) == 1  # (what old readers take)
    old = filled().to_json()  # an older instance's blob: records as objects
    both = merge("v2", "s", [Tally.from_json(blob), Tally.from_json(old)])
    rep = report("iris", both, "json", 1.0, 2)
    assert [d["time"] for d in rep["disagreements"]] == [
        "2030-01-01T00:00:05Z", "2030-01-01T00:00:01Z", "2030-01-01T00:00:00Z"]
    assert rep["disagreements"][0]["request"] == {"x": 1}
    with pytest.raises(TypeError):
        Tally.from_json({**blob, "records": [{"time": "x"}]})
