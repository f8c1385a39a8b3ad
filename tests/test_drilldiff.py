"""domain/drilldiff.py: a fleet not as before the drill, in words."""

from __future__ import annotations

from gateway.domain.drilldiff import differences

BEFORE = {"kills": ["route:a"], "latched": False, "override": None, "stable": "v1",
          "weights": {"v1": 90.0, "v2": 10.0}, "progress": None, "faults": []}


def test_each_difference_is_named() -> None:
    after = {**BEFORE, "kills": ["route:b"], "weights": {"v1": 100.0, "v2": 0.0}}
    got = differences(BEFORE, after, [])
    assert got[0].startswith("killed now, not before the drill: route:b")
    assert got[1].startswith("killed before the drill, not now: route:a")
    assert got[2].startswith("weights was {'v1': 90.0, 'v2': 10.0}")
    assert len(got) == 3


def test_instances_that_have_not_applied_the_restore_are_named() -> None:
    got = differences(BEFORE, BEFORE, [f"i{n}" for n in range(7)])
    assert got == ["the restore is not applied yet by 7 instance(s): i0, i1, i2, i3, i4, ..."]
    assert differences(None, BEFORE, []) == []
