"""Verifying an audit trail (CONTRACT §4): links, hashes, MACs, its anchored head, trims.

Owns `verify_trail` (what could be checked of a trail, oldest first, and its first break,
in words an operator can act on) and `verify_chain` (links and hashes only, which anyone
can check). The events and their sealing are domain/audit.py's; where a trimmed trail may
start, domain/auditcut.py's. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.domain.audit import GENESIS, event_hash, mac_matches
from gateway.domain.auditcut import trail_cuts

__all__ = ["ChainBreak", "TrailReport", "verify_chain", "verify_trail"]


@dataclass(frozen=True, slots=True)
class ChainBreak:
    index: int  # 0 = oldest
    event_id: str
    problem: str


@dataclass(frozen=True, slots=True)
class TrailReport:
    """What `verify_trail` could check, and the first break (None: intact)."""

    events: int
    hashes: int  # events whose chain link and hash were checked
    macs: int  # events whose MAC was checked with a key we hold
    unkeyed: int  # events with no MAC, or one under a key we do not hold
    keyed: bool  # whether any key was given
    brk: ChainBreak | None
    #: the trail starts after a trim: its checkpoint's id, time, removed, from, to
    trimmed: dict[str, Any] | None = None
    #: with `past_loss`: the first place the store lost events (the trail's start, or a
    #: re-seed naming a head the trail lacks; also `brk` when nothing after it broke), and
    #: the events after it were checked all the same
    lost: ChainBreak | None = None


def _mac_problem(ev: dict[str, Any], keys: Mapping[str, bytes]) -> str | bool | None:
    """False: could not check (no mac, unknown key); None: checked and good; str: bad."""
    mac, kid = ev.get("mac"), ev.get("kid")
    if not isinstance(mac, str) or not isinstance(kid, str) or kid not in keys:
        return False
    if mac_matches(keys[kid], ev):
        return None
    return ("mac does not match the event's hash under its key: the event was edited and "
            "re-sealed by someone without the audit key")


def _start_lost(ev: dict[str, Any]) -> str:
    """What a trail that starts after an event it does not hold (no checkpoint names it)
    lost. A store that lost its trail (a flush, a redis restarted empty) starts again at
    the re-seed that continues the head its instance had anchored (or from 64 zeros): a
    first event that is no such re-seed says events were deleted from the start, its
    record among them (found by review revsync: with the re-seed's record deleted, verify
    said "a flushed or truncated store", as of the loss the fleet had reported)."""
    after = (f"the trail starts after event {str(ev.get('prev_hash'))[:16]}…, which the "
             "store no longer holds: ")
    if ev.get("action") == "state.reseed" and ev.get("anchored_head") == ev.get("prev_hash"):
        return (after + "the events before it were lost (a flushed or truncated store); "
                "the audit mirror or a backup holds them")
    return (after + "this event is no re-seed continuing a head the fleet had anchored, as "
            "the first event after a flush is: events were deleted from the trail's start "
            "(a re-seed's record, a trim checkpoint); the audit mirror or a backup holds them")


def verify_trail(events: Iterable[dict[str, Any]], head: str | None = None,
                 keys: Mapping[str, bytes] | None = None, any_checkpoint: bool = False,
                 cuts: Mapping[str, dict[str, Any]] | None = None,
                 past_loss: bool = False) -> TrailReport:
    """Check a trail oldest first: links, hashes and (with `keys`: key id → secret) MACs.

    `head`, when given, is the newest hash as anchored apart from the trail (a signed state
    document, a mirror), read before the events: it must be one of theirs, or events were
    cut off the end, and the newest, or events were added past it (the admin API answers
    with a head and a newest page that agree). A first event that does not start from 64
    zeros means the events before it were lost (a flushed or truncated store). With keys,
    every event after the first keyed one must carry a MAC we can check (events before it:
    written before keyed audit), and so must the newest: it authenticates, through the
    chain, all before it. A trail whose oldest event continues the hash the newest trim
    checkpoint names (with `any_checkpoint`, any checkpoint's: a mirror) starts there; the
    checkpoint itself is checked as any event is, where it stands in the chain (`cuts`:
    the starts to accept instead, for the oldest part of a trail checked on its own).

    `past_loss`: a trail that starts after events the store lost (no checkpoint names its
    start), or whose re-seed names a head the trail no longer holds (a store put back from
    an older backup), is checked on past the loss all the same, the first loss kept as
    `lost`; the first break after it, if any, is `brk` (else the loss is). Without it the
    check stops at the loss, and a trail that lost events (a redis restarted empty, an
    older backup) hid every edit or deletion after them behind that one break, for as long
    as the loss stood."""
    keys = keys or {}
    events = list(events)
    prev = GENESIS
    cuts = trail_cuts(events, any_checkpoint) if cuts is None else cuts
    trimmed: dict[str, Any] | None = None
    n = macs = unkeyed = hashed = 0
    seen: set[str] = set()
    seen_head = head is None or head == GENESIS
    last_checked = False
    start_lost: ChainBreak | None = None

    def report(brk: ChainBreak | None) -> TrailReport:
        return TrailReport(n, hashed, macs, unkeyed, bool(keys), brk or start_lost, trimmed,
                           start_lost)

    lost = ("which is not in the trail before it: the store lost events (restored from an "
            "older backup?); the audit mirror or a backup holds them")
    for i, ev in enumerate(events):
        n = i + 1
        if not isinstance(ev, dict):  # (an answer not from this API: reported, not a crash)
            ev = {"id": f"#{i}", "unparseable": str(ev)[:200]}
        eid = str(ev.get("id", "?"))
        anchored = ev.get("anchored_head")
        if ev.get("action") != "state.reseed" or not isinstance(anchored, str):
            anchored = ""
        if not isinstance(ev.get("prev_hash"), str) or not isinstance(ev.get("hash"), str):
            what = ("not one JSON object" if "unparseable" in ev
                    else "no prev_hash and hash")
            return report(ChainBreak(i, eid, f"not an audit event ({what}): this is not an "
                                             "audit trail, or an event was overwritten"))
        if i == 0 and ev.get("prev_hash") in cuts:  # (a trim removed the events before it)
            prev = str(ev["prev_hash"])
            trimmed = cuts[prev]
        if ev.get("prev_hash") != prev:
            if i == 0 and cuts:
                cut, ck = next(iter(cuts.items()))
                # (a start is a checkpoint's cut, or, for retention's check of a trail's
                # oldest part, a re-seed after a loss: domain/retentionloss.py)
                what = (f"the newest trim checkpoint ({str(ck.get('checkpoint'))[:32]}, "
                        f"{ck.get('time')}) removed events only up to"
                        if "checkpoint" in ck else
                        f"the re-seed after a loss it must continue ({str(ck.get('reseed'))[:32]}, "
                        f"{ck.get('time')}) is")
                return report(ChainBreak(0, eid, (
                    f"the trail starts after event {str(ev.get('prev_hash'))[:16]}…, but "
                    f"{what} {cut[:16]}…: events were deleted past it "
                    "without a signed checkpoint")))
            if i == 0:
                start_lost = ChainBreak(0, eid, _start_lost(ev))
                if not past_loss:
                    return report(None)
                prev = str(ev["prev_hash"])  # (checked on from where it starts)
            elif anchored and anchored == ev.get("prev_hash"):
                gone = ChainBreak(i, eid, f"this re-seed continues the head its instance "
                                          f"had anchored ({anchored[:16]}…), " + lost)
                if not past_loss:
                    return report(gone)
                start_lost = start_lost or gone
                prev = anchored  # (checked on from the head it continues)
            else:
                return report(ChainBreak(i, eid, "prev_hash does not match the previous "
                                                 "event's hash (an event was deleted, "
                                                 "inserted or reordered)"))
        if ev.get("hash") != event_hash(ev):
            return report(ChainBreak(i, eid, "hash does not match the event's content (edited)"))
        hashed += 1
        if keys:
            problem = _mac_problem(ev, keys)
            if isinstance(problem, str):
                return report(ChainBreak(i, eid, problem))
            if problem is False and macs:
                return report(ChainBreak(i, eid, (
                    "no MAC under a key given here" + (
                        f" (kid {str(ev['kid'])[:16]!r})" if ev.get("kid") else "") + ", after "
                    "events that had one: re-sealed by someone without the audit key, or "
                    "written with a key not given here")))
            last_checked = problem is None
            macs += last_checked
            unkeyed += not last_checked
        elif "mac" in ev:
            unkeyed += 1
        if anchored and anchored not in seen and anchored != prev:
            gone = ChainBreak(i, eid, f"this re-seed names the head its instance had "
                                      f"anchored ({anchored[:16]}…), " + lost)
            if not past_loss:
                return report(gone)
            start_lost = start_lost or gone  # (a backup put back: checked on past it)
        prev = str(ev["hash"])
        seen.add(prev)
        seen_head = seen_head or prev == head
    if not seen_head:
        return report(ChainBreak(n, "(end)", f"the trail ends before the anchored head "
                                             f"{str(head)[:16]}…: events were cut off the end"))
    if head is not None and head != GENESIS and n and prev != head:
        past = next(i for i, ev in enumerate(events) if ev.get("hash") == head) + 1
        return report(ChainBreak(past, str(events[past].get("id", "?")), (
            f"this event and the {n - past - 1} after it are past the head the signed state "
            f"anchors ({str(head)[:16]}…): every event a gateway writes is anchored with it, "
            "so these were added to the store by someone without the signing key")))
    if keys and n and not last_checked:
        return report(ChainBreak(n - 1, eid, (  # (the newest's id: "id (newest)" named none)
            "the newest event carries no MAC under a key given here: nothing authenticates "
            "the trail (re-sealed without the key, written without one, or verified with "
            "the wrong key)")))
    return report(None)


def verify_chain(events: Iterable[dict[str, Any]],
                 head: str | None = None) -> tuple[int, ChainBreak | None]:
    """Links and hashes only (anyone can check these): (events checked, first break)."""
    r = verify_trail(events, head)
    return r.events, r.brk
