"""Audit retention's decision and the verification of a trimmed trail (pure: no loop).

domain/retention.py decides what a trim removes and builds its checkpoint;
domain/audit.py's verify_trail accepts a trail that starts where the newest checkpoint
says, and nothing else: events deleted past it, deleted without a checkpoint, or a
checkpoint forged without the audit key are breaks.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.domain.audit import GENESIS, AuditDraft, seal
from gateway.domain.auditverify import verify_trail
from gateway.domain.retention import MIN_KEEP, TRIM_BATCH, Retention, TrimWindow, decide_trim

pytestmark = pytest.mark.timeout(10)

KEY = ("k1", b"k" * 32)
KEYS = {KEY[0]: KEY[1]}


def _trail(n: int, start: str = GENESIS, t0: str = "2026-01-01T00:00:00.000Z",
           ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    prev = start
    for i in range(n):
        ev = AuditDraft(actor="alice", action="kill", target={"route": "iris"},
                        reason=f"r{i}").as_event()
        ev["time"] = t0
        ev = seal(ev, prev, KEY)
        out.append(ev)
        prev = ev["hash"]
    return out


def _w(events: list[dict[str, Any]], head: str) -> TrimWindow:
    return TrimWindow.whole(events, head)


def _trimmed(events: list[dict[str, Any]], policy: Retention,
             now: float | None = None) -> tuple[int, list[dict[str, Any]]]:
    """What a store does: remove the decided events, append the checkpoint."""
    d = decide_trim(_w(events, events[-1]["hash"]), KEYS, policy, now or time.time())
    assert d.draft is not None, d.why
    ck = seal(d.draft.as_event(), events[-1]["hash"], KEY)
    return d.remove, [*events[d.remove:], ck]


def test_a_trimmed_trail_verifies_and_says_where_it_starts() -> None:
    events = _trail(130)
    removed, kept = _trimmed(events, Retention(max_events=110))
    assert removed == 20 and len(kept) == 111
    r = verify_trail(kept, kept[-1]["hash"], KEYS)
    assert r.brk is None, r.brk
    assert r.trimmed is not None and r.trimmed["removed"] == 20
    ck = kept[-1]
    assert ck["action"] == "audit.trim" and ck["actor"] == "killgate/retention"
    assert ck["after"]["last_removed"] == {"id": events[19]["id"], "hash": events[19]["hash"],
                                           "time": events[19]["time"]}
    # a second trim: the trail then starts where the newest checkpoint says
    more = kept + _trail(40, kept[-1]["hash"])
    _, again = _trimmed(more, Retention(max_events=110))
    r = verify_trail(again, again[-1]["hash"], KEYS)
    assert r.brk is None and r.trimmed is not None, r.brk


def test_events_deleted_past_the_checkpoint_are_a_break() -> None:
    _, kept = _trimmed(_trail(130), Retention(max_events=110))
    r = verify_trail(kept[3:], kept[-1]["hash"], KEYS)
    assert r.brk is not None and r.brk.index == 0
    assert "deleted past it without a signed checkpoint" in r.brk.problem
    # also an older checkpoint's cut, for a trail of the store (the newest one counts)
    more = kept + _trail(40, kept[-1]["hash"])
    _, again = _trimmed(more, Retention(max_events=110))
    assert verify_trail(again[1:], again[-1]["hash"], KEYS).brk is not None


def test_events_deleted_without_a_checkpoint_are_a_break() -> None:
    events = _trail(130)
    r = verify_trail(events[5:], events[-1]["hash"], KEYS)
    assert r.brk is not None and r.brk.index == 0 and r.trimmed is None
    # and a trim refuses to remove anything from such a trail (it would hide the break)
    d = decide_trim(_w(events[5:], events[-1]["hash"]), KEYS, Retention(max_events=100),
                    time.time())
    assert d.remove == 0 and d.broken and "does not verify" in d.why


def test_a_checkpoint_forged_without_the_audit_key_is_a_break() -> None:
    events = _trail(130)
    forged = AuditDraft(actor="killgate/retention", action="audit.trim",
                        target={"trail": "audit"}, reason="retention",
                        after={"removed": 20, "last_removed": {
                            "id": events[19]["id"], "hash": events[19]["hash"]}}).as_event()
    wrong = seal(forged, events[-1]["hash"], ("k1", b"x" * 32))  # (the kid, not the key)
    trail = [*events[20:], wrong]
    r = verify_trail(trail, wrong["hash"], KEYS)  # even with a head rewritten to it
    assert r.brk is not None and "mac does not match" in r.brk.problem, r.brk
    # without the key: the head the signed state anchors is not the forged checkpoint
    r = verify_trail(trail, events[-1]["hash"])
    assert r.brk is not None, r


def test_a_mirror_may_start_after_any_checkpoint_a_store_only_after_the_newest() -> None:
    _, kept = _trimmed(_trail(130), Retention(max_events=110))
    mirror = kept + _trail(40, kept[-1]["hash"])  # (a mirror started after the 1st trim)
    _, store = _trimmed(mirror, Retention(max_events=110))
    mirror = [*mirror, store[-1]]
    assert verify_trail(mirror, None, KEYS, any_checkpoint=True).brk is None
    assert verify_trail(mirror, None, KEYS).brk is not None


def test_the_policy_keeps_the_newest_and_what_a_kept_reseed_names() -> None:
    events = _trail(300)
    assert decide_trim(_w(events, events[-1]["hash"]), KEYS, Retention(max_events=100),
                       time.time()).remove == 200
    # max_age: events older than it go, always keeping MIN_KEEP (its age measured back
    # from the newest event at most: the trail's newest is dated now)
    now = time.time()
    fresh = _trail(1, events[-1]["hash"], time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                        time.gmtime(now)))
    aged = [*events, *fresh]
    d = decide_trim(_w(aged, aged[-1]["hash"]), KEYS, Retention(max_age=3600.0), now)
    assert d.remove == 301 - MIN_KEEP
    # a trail quiet since (its newest event old too): kept as it is, as the clock that
    # trims could be ahead of the one that dated the events (the local store's only clock)
    d = decide_trim(_w(events, events[-1]["hash"]), KEYS, Retention(max_age=3600.0), now)
    assert d.remove == 0
    assert not Retention(max_events=200).due(220, events[0], now)
    assert Retention(max_events=200).due(221, events[0], now)
    assert Retention(max_age=3600.0).due(300, events[0], now)
    # a re-seed that names an older head as its instance's: that head stays in the trail
    reseed = AuditDraft(actor="killgate/auto", action="state.reseed", target={}, reason="x",
                        extra={"anchored_head": events[150]["hash"]}).as_event()
    trail = [*events, seal(reseed, events[-1]["hash"], KEY)]
    d = decide_trim(_w(trail, trail[-1]["hash"]), KEYS, Retention(max_events=100), now)
    assert d.remove == 150
    # nothing this instance's mirror has not copied yet (GENESIS: nothing copied yet)
    d = decide_trim(_w(events, events[-1]["hash"]), KEYS, Retention(max_events=100), now,
                    copied=events[10]["hash"])
    assert d.remove == 11
    assert decide_trim(_w(events, events[-1]["hash"]), KEYS, Retention(max_events=100), now,
                       copied=GENESIS).remove == 0
    # nothing past the anchored head: a trail with events past it does not verify
    assert decide_trim(_w(events, events[-5]["hash"]), KEYS, Retention(max_events=100),
                       now).remove == 0


def test_one_trim_removes_at_most_trim_batch_from_a_window_of_the_oldest() -> None:
    """A redis store reads a window (the oldest TRIM_BATCH + 1 events, the newest, the
    newest checkpoint, the re-seeds), never the whole trail."""
    events = _trail(TRIM_BATCH + 150)
    w = TrimWindow(len(events), events[:TRIM_BATCH + 1], events[-1], None, [],
                   events[-1]["hash"])
    d = decide_trim(w, KEYS, Retention(max_events=100), time.time())
    assert d.remove == TRIM_BATCH and d.draft is not None
    # the window's newest must be the anchored head (nothing past it)
    w = TrimWindow(len(events), events[:TRIM_BATCH + 1], events[-1], None, [],
                   events[-2]["hash"])
    assert decide_trim(w, KEYS, Retention(max_events=100), time.time()).broken


def test_forged_entries_of_any_shape_do_not_crash_the_decision() -> None:
    events = _trail(130)
    junk = {"id": "x", "action": "state.reseed", "hash": ["not", "a", "str"],
            "anchored_head": {"a": 1}, "prev_hash": 3}
    w = TrimWindow(len(events) + 1, [junk, *events], events[-1], None, [junk],
                   events[-1]["hash"])
    d = decide_trim(w, KEYS, Retention(max_events=100), time.time())
    assert d.remove == 0 and d.broken, d


def test_a_trail_that_starts_at_a_reseed_after_a_loss_starts_there_only_if_genuine() -> None:
    """A trail a store lost and a re-seed continued was never trimmed (its start did not
    verify): it starts at a genuine re-seed now, and the checkpoint says what was lost.
    A re-seed forged without the audit key, a plain event in its place, or a break after
    it still refuse."""
    pol = Retention(max_events=100)
    for key, ok in ((KEY, True), (("k1", b"x" * 32), False)):
        reseed = seal(AuditDraft(actor="killgate/auto", action="state.reseed",
                                 target={"store": "redis"}, reason="empty",
                                 extra={"anchored_head": "a" * 64}).as_event(), "b" * 64, key)
        trail = [reseed, *_trail(130, reseed["hash"])]
        d = decide_trim(_w(trail, trail[-1]["hash"]), KEYS, pol, time.time())
        assert (d.remove == 31) is ok and d.broken is not ok, (key, d)
        if ok:
            assert d.draft is not None and d.draft.after["starts_after"] == {
                "reseed": reseed["id"], "time": reseed["time"], "lost_before": "b" * 64}
    plain = _trail(131, "b" * 64)  # (the same start, no re-seed)
    assert decide_trim(_w(plain, plain[-1]["hash"]), KEYS, pol, time.time()).broken
    trail = [reseed := seal(dict(reseed), "b" * 64, KEY), *_trail(130, reseed["hash"])]
    del trail[5]  # (an event deleted after it)
    d = decide_trim(_w(trail, trail[-1]["hash"]), KEYS, pol, time.time())
    assert d.broken and "event #5" in d.why, d
    # a trail trimmed since, whose oldest kept event is a re-seed: it starts at the cut
    cut = "c" * 64
    kept = [seal(AuditDraft(actor="killgate/auto", action="state.reseed", target={},
                            reason="refused", extra={"anchored_head": cut}).as_event(),
                 cut, KEY)]
    kept += _trail(130, kept[0]["hash"])
    kept.append(seal(AuditDraft(actor="killgate/retention", action="audit.trim",
                                target={"trail": "audit"}, reason="retention",
                                after={"removed": 5, "last_removed": {"id": "x", "hash": cut}},
                                ).as_event(), kept[-1]["hash"], KEY))
    d = decide_trim(_w(kept, kept[-1]["hash"]), KEYS, pol, time.time())
    assert d.draft is not None and "lost_before" not in d.draft.after["starts_after"], d


def test_a_loss_after_a_fresh_trail_from_zeros_is_trimmed_whole_only_if_genuine() -> None:
    """A flushed store on which an instance without a snapshot wrote from 64 zeros, then a
    re-seed naming a head the trail does not hold (tests/test_retention_loss.py with real
    stores): trimmed once the re-seed is past the bounds, re-seed included, the loss said.
    The shapes deleting events makes, a forged re-seed, or the re-seed kept, refuse."""
    pol = Retention(max_events=100)

    def trail(key: tuple[str, bytes] = KEY, prev: str | None = None,
              drop: int | None = None, after: int = 100) -> list[dict[str, Any]]:
        fresh = _trail(50)
        reseed = seal(AuditDraft(actor="killgate/auto", action="state.reseed",
                                 target={"store": "redis"}, reason="older",
                                 extra={"anchored_head": "a" * 64}).as_event(),
                      prev or fresh[-1]["hash"], key)
        out = [*fresh, reseed, *_trail(after, reseed["hash"])]
        if drop is not None:
            del out[drop]
        return out

    t = trail()
    d = decide_trim(_w(t, t[-1]["hash"]), KEYS, pol, time.time())
    assert d.remove == 51 and not d.broken, d  # (the 50 from zeros and the re-seed)
    assert d.draft is not None and d.draft.after["starts_after"] == {
        "reseed": t[50]["id"], "time": t[50]["time"], "lost_before": "a" * 64}
    ck = seal(d.draft.as_event(), t[-1]["hash"], KEY)
    assert verify_trail([*t[51:], ck], ck["hash"], KEYS).brk is None
    for what, bad in (("forged without the audit key", trail(("k1", b"x" * 32))),
                      ("an event deleted before it", trail(drop=20)),
                      ("events deleted up to it", trail(prev="b" * 64)),
                      # (right after it, among what the trim checks: the re-seed is the
                      # 51st of 151, 51 to remove; a break past the first event kept stays
                      # in sight, as after any trim)
                      ("an event deleted after it", trail(drop=51, after=101))):
        d = decide_trim(_w(bad, bad[-1]["hash"]), KEYS, pol, time.time())
        assert d.broken and d.remove == 0, (what, d)
    # the re-seed not yet past the bounds: the events before it go, it stays, and so
    # does the loss `audit verify` reports at it
    t = trail(after=60)
    d = decide_trim(_w(t, t[-1]["hash"]), KEYS, Retention(max_events=100), time.time())
    assert d.remove == 11 and d.draft is not None, d
    assert d.draft.after["starts_after"] is None  # (it started at 64 zeros)
    ck = seal(d.draft.as_event(), t[-1]["hash"], KEY)
    brk = verify_trail([*t[11:], ck], ck["hash"], KEYS).brk
    assert brk is not None and "not in the trail before it" in brk.problem, brk


def test_a_loss_whose_reseed_is_the_first_event_kept_is_no_break() -> None:
    """The bound falling exactly at the re-seed after a loss (k events to remove, the
    re-seed the k+1th: one count for max_events, the seconds between the re-seed and the
    event before it for max_age, or a kept re-seed naming it, or the mirror copied up to
    the event before it) refused the trim as broken: 'audit_trim_refused' at ERROR, the
    status's retention 'refused', 409 trail_broken for a manual trim, for a genuine loss
    that `audit verify` reports as one. The events up to the one before the re-seed go
    (the re-seed is never left first after a checkpoint: no start could be said there)."""
    pol = Retention(max_events=100)
    fresh = _trail(50)
    reseed = seal(AuditDraft(actor="killgate/auto", action="state.reseed",
                             target={"store": "redis"}, reason="older",
                             extra={"anchored_head": "a" * 64}).as_event(),
                  fresh[-1]["hash"], KEY)
    t = [*fresh, reseed, *_trail(99, reseed["hash"])]  # (150: 50 to remove, 50 is it)
    d = decide_trim(_w(t, t[-1]["hash"]), KEYS, pol, time.time())
    assert not d.broken and d.remove == 49 and d.draft is not None, d
    ck = seal(d.draft.as_event(), t[-1]["hash"], KEY)
    kept = [*t[49:], ck]
    brk = verify_trail(kept, ck["hash"], KEYS).brk
    assert brk is not None and "not in the trail before it" in brk.problem, brk  # (said)
    # the next trim past it removes it, the loss said by the checkpoint
    more = [*kept, *_trail(5, ck["hash"])]
    d = decide_trim(_w(more, more[-1]["hash"]), KEYS, pol, time.time())
    assert not d.broken and d.draft is not None and d.remove == len(more) - 100, d
    assert d.draft.after["starts_after"]["lost_before"] == "a" * 64


def test_an_event_deleted_right_after_a_loss_reseed_is_a_break_not_a_crash() -> None:
    """The event right after the re-seed a trim starts from (a trail that starts at one,
    or one in the middle it removes) deleted from the store (a write to redis, no key):
    the check raised KeyError ('checkpoint': the message named a trim checkpoint the
    start is not), so a manual trim was a 500 and the periodic one 'audit_trim_failed', not
    the refusal 'audit_trim_refused' naming the break."""
    pol = Retention(max_events=100)
    reseed = seal(AuditDraft(actor="killgate/auto", action="state.reseed",
                             target={"store": "redis"}, reason="empty",
                             extra={"anchored_head": "a" * 64}).as_event(), "b" * 64, KEY)
    trail = [reseed, *_trail(130, reseed["hash"])]
    del trail[1]
    d = decide_trim(_w(trail, trail[-1]["hash"]), KEYS, pol, time.time())
    assert d.broken and d.remove == 0, d
    assert "events were deleted past it" in d.why and reseed["id"][:32] in d.why, d
