"""domain/keyquota.py, sans I/O: a sticky key's requests counted toward canary analysis
per window, and the tracker's memory bound."""

from __future__ import annotations

import time

from gateway.domain.keyquota import KeyQuota


def test_a_key_counts_up_to_its_limit_per_period_then_again() -> None:
    q = KeyQuota()
    got = [q.admit("r", "alice", 3, 10.0, 100.0 + i * 0.1) for i in range(5)]
    assert got == [True, True, True, False, False]
    assert q.admit("r", "bob", 3, 10.0, 101.0)  # another key: its own count
    assert q.admit("other", "alice", 3, 10.0, 101.0)  # another route: its own count
    assert q.admit("r", "alice", 3, 10.0, 110.0)  # the next period (aligned to the window)
    assert q.keys == 2  # the old period of "r" is gone: its two keys no longer held


def test_memory_is_bounded_and_ended_periods_make_room() -> None:
    q = KeyQuota(max_keys=100)
    assert all(q.admit("r", f"k{i}", 5, 60.0, 0.0) for i in range(100))
    assert not q.admit("r", "new", 5, 60.0, 1.0)  # full: a new key is not counted ...
    assert q.admit("r", "k7", 5, 60.0, 1.0)  # ... a known one still is
    assert q.keys == 100
    assert q.admit("s", "x", 5, 60.0, 61.0)  # the full route's period ended: swept
    assert q.keys == 1


def test_a_long_key_holds_no_more_memory_and_the_cost_is_a_dict_op() -> None:
    q = KeyQuota()
    key = "u" * 8000
    assert q.admit("r", key, 2, 60.0, 0.0) and q.admit("r", key, 2, 60.0, 0.0)
    assert not q.admit("r", key, 2, 60.0, 0.0)
    keys = [f"user-{i}" for i in range(20000)]
    t = time.perf_counter()
    for k in keys:
        q.admit("r", k, 10, 60.0, 1.0)
    per = (time.perf_counter() - t) / len(keys)
    assert per < 20e-6, per  # (about 0.3 µs here; bounded loosely for a loaded machine)


def test_a_client_address_rotating_keys_is_bounded_too() -> None:
    q = KeyQuota()
    got = [q.admit("r", f"k{i}", 10, 60.0, 1.0, "198.51.100.7", 3) for i in range(5)]
    assert got == [True, True, True, False, False]
    assert q.admit("r", "k9", 10, 60.0, 1.0, "198.51.100.8", 3)  # another client
    # a key past its bound spends none of its client's (and the other way round)
    assert [q.admit("r", "same", 1, 60.0, 1.0, "203.0.113.1", 2) for _ in range(3)] == \
        [True, False, False]
    assert q.admit("r", "other", 1, 60.0, 1.0, "203.0.113.1", 2)
    assert q.keys == 4 + 2 + 2 + 1  # (keys and addresses apart; none a refusal added)
