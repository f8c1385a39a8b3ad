"""What `killgate status` must not leave to the operator to notice in the JSON: an instance
that does not enforce what the fleet does (stale, never synced, behind), and a trail or a
store that is not what it should be. One line each, in capitals first, saying what to do.

Pure functions of the /v1/status document; cli/admin.py prints them.
"""

from __future__ import annotations

from typing import Any

from gateway.cli.statusbuilds import build_cell
from gateway.domain.audit import clean_text

__all__ = ["instance_rows", "latched_line", "store_warnings"]


def _s(ms: Any) -> str:
    return f"{ms / 1000:.1f} s" if isinstance(ms, int | float) else "?"


#: a value under a key id this instance does not hold: a key changed, instances with different
#: keys, or a forgery (anyone who can write to the store can name any key id: the id is no proof)
ANOTHER_KEY = ("a key id this instance does not hold: the state key was changed without "
               "`state.previous_signing_key_env` naming the old one, or instances run different "
               "keys (each refuses the others' writes), or someone wrote it without the key (a "
               "forger can name any key id)")


def unverified_why(last: dict[str, Any], verification: dict[str, Any] | None = None) -> str:
    """What an UNVERIFIED line says of its cause. A value under an unknown key id is often a
    key changed or mismatched (review as a new user: a restart with a new KILLGATE_STATE_KEY
    said its own snapshot was written by "something ... without the signing key", which
    reads as an intruder at 3 a.m.); but anyone with write access to the store picks the key
    id a forged value names, so the words must not clear it (found by review: a forgery
    naming a made-up key id read as a benign key change). They name this instance's key
    id(s) and the check that tells the cases apart. A wrong MAC under a known key is a
    write without it."""
    ver = verification or {}
    causes = ver.get("by_cause")
    if not isinstance(causes, dict):  # (an instance of before the counts by cause)
        causes = {"unknown_key_id" if "signed with an unknown key id" in str(
            last.get("problem")) else "other": 1}
    out = []
    if any(n for c, n in causes.items() if c != "unknown_key_id"):
        out.append("something wrote to the store without the signing key")
    if causes.get("unknown_key_id"):
        ours = ", ".join(repr(k) for k in (ver.get("key_id"), ver.get("previous_key_id")) if k)
        out.append(f"{ANOTHER_KEY}. This instance holds key id(s) {ours or '?'}; each "
                   "instance's `killgate status --json` names its own "
                   "(store.verification.key_id): if none of yours runs or ran the refused key "
                   "id, treat it as TAMPERING")
    return "; and ".join(out) or "something wrote to the store without the signing key"


_CAUSE_WORDS = {"bad_signature": "wrong signature", "unsigned": "unsigned",
                "unknown_key_id": "unknown key id", "other": "other"}


def _by_cause(verification: dict[str, Any], last: dict[str, Any]) -> str:
    """Each cause's count and latest refusal, strongest evidence first (found by review:
    only the last refusal was shown, so a forger's wrong-MAC write followed by a value
    naming a made-up key id read as a key change alone)."""
    causes = verification.get("by_cause")
    lasts = verification.get("last_by_cause")
    if not isinstance(causes, dict) or not isinstance(lasts, dict):
        return f"last: {last.get('kind')}: {last.get('problem')}"
    parts = []
    for cause, words in _CAUSE_WORDS.items():
        if causes.get(cause):
            one = lasts.get(cause) or {}
            parts.append(f"{words} {causes[cause]}, last: {one.get('kind')}: "
                         f"{one.get('problem')}")
    return "; ".join(parts)


def _retired_line(verification: dict[str, Any]) -> str | None:
    """Values refused for a key id the fleet retired in a rotation: not tampering, most
    likely (found by review revfalse2: a routine rotation's left-overs said UNVERIFIED ...
    TAMPERING); said apart, with what would make it something else."""
    retired = verification.get("retired_key")
    if not isinstance(retired, dict):
        return None
    n = sum(v for v in retired.values() if isinstance(v, int))
    if not n:
        return None
    last = verification.get("last_retired_key") or {}
    ids = ", ".join(repr(k) for k in verification.get("retired_key_ids") or []) or "?"
    return (f"RETIRED KEY: {n} value(s) read from the store were refused for naming a key "
            f"id the fleet retired in a key rotation ({ids}; {retired}; last: "
            f"{last.get('kind')}: {last.get('problem')}): most likely written before the "
            "rotation (counts and heartbeats of instances replaced or crashed since, an "
            "idempotency record: each is refused once, and goes as it is removed, rewritten "
            "or expires); not counted as tampering. If they keep coming, an instance still "
            "signs with the retired key (compare each instance's store.verification.key_id) "
            "or someone holding it writes to the store")


def store_warnings(st: dict[str, Any]) -> list[str]:
    """Lines about the state this instance enforces and the store it reads, worst first."""
    store = st.get("store") or {}
    out: list[str] = []
    routes = st.get("routes") or {}
    if store.get("unverifiable"):
        said = str(store["unverifiable"])
        # (a key rotation's document not re-signed, or one rolled back: the key is the
        # fleet's, and "put the fleet's key there and restart" changed nothing: revrot4)
        out.append(f"STATE UNVERIFIABLE: {said}. NOT READY (/readyz 503 "
                   "state_unverifiable): load balancers stop sending it traffic; the kills it "
                   "holds stay enforced. " + (
                       "Do as said above (README Key rotation)" if "make a write" in
                       said.lower() else
                       "Compare store.verification.key_id with another instance's "
                       "(`killgate status --json`), put the fleet's key in "
                       "state.signing_key_env, and restart this instance"))
    if store.get("key_unconfirmed") and not store.get("unverifiable"):
        out.append(f"KEY UNCONFIRMED: {clean_text(str(store['key_unconfirmed']), 500)}")
    if any(isinstance(r, dict) and r.get("killed") == "state_unknown" for r in routes.values()):
        out.append("STATE UNKNOWN: this instance has not loaded the fleet's kills (no sync with "
                   "the store yet, no snapshot): every matched route answers its fallback, else "
                   "503 state_unknown, until it syncs; check that it can reach the store")
    elif store.get("synced") is False and store.get("from_snapshot"):
        out.append(f"NOT SYNCED: enforcing the kills of its snapshot (generation "
                   f"{st.get('generation')}) since it has not reached the store: kills and "
                   "unkills made since are NOT in force here")
    elif store.get("synced") is False and store.get("backend") not in (None, "local"):
        out.append("NOT SYNCED: routing on the config alone (state.ready_without_state): kills "
                   "made while this instance was away are NOT in force here until it syncs")
    if store.get("stale"):
        out.append(f"STALE: no sync with the store for {_s(store.get('staleness_ms'))} (more "
                   f"than max_staleness, {_s(store.get('max_staleness_ms'))}): kills and unkills "
                   "made since may NOT be in force here"
                   + ("; every route answers killed (on_unavailable fail_closed) until the "
                      "store answers" if store.get("fail_closed") else ""))
    if store.get("connected") is False and store.get("last_error"):
        out.append(f"STORE ERROR: {store['last_error']}")
    local = store.get("local_kills") or {}
    for k in local.get("kills") or ():
        if k.get("in_store") is not None:  # (committed; its journal cannot be rewritten)
            out.append(f"LOCAL KILL MERGED, JOURNAL NOT REWRITTEN: {clean_text(str(k.get('kill')), 200)}"
                       f" is in the store (generation {clean_text(str(k['in_store']), 20)}: the "
                       "fleet enforces it) but its journal cannot be rewritten (a read-only or "
                       "full volume of state.snapshot_path): still enforced here, even after "
                       "an unkill, until it can be")
            continue
        out.append(f"LOCAL KILL NOT IN STORE: {clean_text(str(k.get('kill')), 200)} (taken "
                   f"{clean_text(str(k.get('time')), 40)} by {clean_text(str(k.get('actor')), 200)}"
                   f" on {clean_text(str(k.get('instance')), 200)}): enforced on this instance "
                   "only, NOT by the rest of the fleet until the store answers and it is merged")
    if local.get("refused"):
        out.append(f"LOCAL KILLS REFUSED: {clean_text(str(local['refused']), 500)}: none of "
                   "its kills is enforced or merged (signed with another key, or edited)")
    snapshot = store.get("snapshot") or {}
    if snapshot.get("ok") is False:
        out.append(f"SNAPSHOT NOT WRITTEN: {snapshot.get('error')}; the file holds generation "
                   f"{snapshot.get('generation')}: a restart while the store cannot be reached "
                   "(or lost its state) would enforce that, without the changes since")
    if snapshot.get("kills_only"):
        out.append(f"SNAPSHOT KILLS ONLY: the snapshot read at start-up was not trusted "
                   f"({snapshot['kills_only']}): its kills are enforced, its overrides, weights "
                   "and history were refused; lift a kill you do not want with `killgate unkill`")
    if snapshot.get("refused"):
        out.append(f"SNAPSHOT REFUSED: the snapshot read at start-up was refused whole "
                   f"({snapshot['refused']}): nothing of it is enforced; this instance started "
                   "as one without a snapshot (its next write replaces the file)")
    verification = store.get("verification") or {}
    if verification.get("unverified_total"):
        last = verification.get("last_unverified") or {}
        out.append(f"UNVERIFIED: {verification['unverified_total']} value(s) read from the store "
                   f"failed verification and were refused ({verification.get('unverified')}; "
                   f"{_by_cause(verification, last)}): {unverified_why(last, verification)}")
    if verification.get("flooded"):
        out.append(f"FLOODED: the store's heartbeats hash holds {verification['flooded']} "
                   "entries more than one fleet read reads: someone who can write to redis "
                   "filled it (the instances already known are read by name, the rest in "
                   "steps, refused ones removed as read); find who writes to redis")
    if counts := verification.get("flooded_counts"):
        out.append("FLOODED COUNTS: the store's analysis counts hash(es) hold entries more "
                   "than one read reads (" + ", ".join(f"{k}: {n}" for k, n in sorted(
                       counts.items())) + "): someone who can write to redis filled them "
                   "(the instances known are read by name, the rest in steps, refused ones "
                   "removed as read); find who writes to redis")
    if line := _retired_line(verification):
        out.append(line)
    audit = store.get("audit") or {}
    lost = audit.get("trail_lost")
    if lost:
        by = lost.get("reseeded_by") if isinstance(lost, dict) else None
        out.append(f"AUDIT TRAIL LOST: the store lost audit events the fleet had anchored "
                   f"(a flush, or a backup restored; re-seeded "
                   f"{f'by {by} ' if by else ''}at "
                   f"{lost.get('time') if isinstance(lost, dict) else lost}); `killgate audit "
                   f"verify` names the gap: {_lost_where(audit.get('mirror'))}")
    mirror = audit.get("mirror") or {}
    refused = mirror.get("refused") or mirror.get("error")
    if refused:
        what = refused.get("problem") if isinstance(refused, dict) else refused
        out.append(f"AUDIT MIRROR STOPPED ({mirror.get('path')}): {what}")
    out += _mirror_crashes(mirror)
    return out


def _lost_where(mirror: Any) -> str:
    """Where the events before a trail loss may still be: this instance's audit mirror, or,
    without one (a new user's config has none), only a backup of the store: "compare with
    the audit mirror" sent them looking for a file that does not exist."""
    if isinstance(mirror, dict) and mirror.get("path"):
        return (f"compare with the audit mirror ({mirror['path']}: `killgate audit verify "
                f"--mirror {mirror['path']}`)")
    return ("this instance keeps no audit mirror (state.audit_mirror), so the events before "
            "the gap are only in a backup of the store, if one was made; set "
            "state.audit_mirror to keep a local copy from now on")


def _mirror_crashes(mirror: dict[str, Any]) -> list[str]:
    """The mirror's copy stopped by an unexpected error (restarting after a back-off), or
    restarted after one: how many times, and the newest error."""
    stopped, last = mirror.get("stopped"), mirror.get("last_crash")
    restarts = mirror.get("restarts") or 0
    if isinstance(stopped, dict):
        return [clean_text(
            f"AUDIT MIRROR STOPPED ({mirror.get('path')}): stopped by an unexpected error at "
            f"{stopped.get('time')}: {stopped.get('error')}; restarting in "
            f"{stopped.get('restart_in_s')}s (restarted {restarts} time(s) so far; if it "
            "keeps stopping, report the error: events are not copied meanwhile)", 4096)]
    if restarts and isinstance(last, dict):
        return [clean_text(
            f"AUDIT MIRROR RESTARTED {restarts} time(s) ({mirror.get('path')}), copying "
            f"again; the last stop, at {last.get('time')}: {last.get('error')}", 4096)]
    return []


def instance_rows(st: dict[str, Any], silent: list[dict[str, Any]]) -> list[list[str]]:
    """The INSTANCES table (header first), each instance's generation compared with the one
    this instance enforces: one behind it has not applied the newest change. `silent`:
    rows of `GET /v1/fleet` not heard from within the lease (not counted in receipts)."""
    mine = st.get("generation")
    cfg = st.get("config")
    digest = cfg.get("digest") if isinstance(cfg, dict) else None
    rows = [["instance", "build", "generation", "config", "heard", ""]]
    for name, i in sorted((st.get("instances") or {}).items()):
        gen = i.get("generation")
        note = ""
        if isinstance(gen, int) and isinstance(mine, int) and name != st.get("instance"):
            # (not the instance that answered: what it enforces is `mine`; its own
            # heartbeat follows each change a moment later)
            if gen < mine:
                note = f"BEHIND: has not applied generation {mine}"
            elif gen > mine:
                note = f"AHEAD of {st.get('instance')}"
        other = i.get("config")
        if isinstance(digest, str) and isinstance(other, str) and other \
                and other != digest and name != st.get("instance"):
            # a config rolling out, or a reload refused on one side (a worker of a group
            # included): the digests alone, 19 characters each, had to be told apart by eye
            note = (note + "; " if note else "") + (
                f"OTHER CONFIG than {st.get('instance')} ({digest[:19]}): a change not yet "
                "applied there, a reload refused there or here (see its config.last_error), "
                "or files that differ on purpose (per-host settings)")
        rows.append([name, build_cell(i), str(gen), (i.get("config") or "")[:19],
                     f"{i.get('seen_s_ago', 0):.1f}s ago", note])
    got = st.get("store")
    store: dict[str, Any] = got if isinstance(got, dict) else {}
    # (while the store refuses every write, -NOREPLICAS, every heartbeat is refused: each
    # instance reads and applies the store still; "stop it" sent the SRE to stop healthy
    # instances in the store's incident: found by revlate47)
    refused = store.get("connected") is True and bool(store.get("writes_refused"))
    for r in silent:
        ago = r.get("seen_s_ago")
        rows.append([str(r.get("instance")), build_cell(r), str(r.get("generation")),
                     str(r.get("config") or "")[:19],
                     f"{ago:.1f}s ago" if isinstance(ago, int | float) else "?",
                     SILENT_REFUSED if refused else
                     "SILENT: not counted in receipts; crashed, or cut off from the store and "
                     "NOT enforcing changes made since (check it, or stop it)"])
    return rows


#: a SILENT row's note while the store refuses every write (its heartbeat refused too)
SILENT_REFUSED = ("SILENT: not counted in receipts; not heard since the store refuses every "
                  "write (WRITES REFUSED: its heartbeat too), so whether it still applies "
                  "the store cannot be told from here: ask its own /v1/status "
                  "(store.connected, stale)")


def latched_line(name: str, r: dict[str, Any]) -> str | None:
    """What a latched route runs instead of the file's weights (the table's `weight` is the
    file's: after `weights iris v1=100` it still read v2 50, with only `(latched)` beside)."""
    ov = r.get("override")
    if not r.get("latched") or not isinstance(ov, dict):
        return None
    weights = ov.get("weights")
    weights = weights if isinstance(weights, dict) else {}
    said = " ".join(f"{v}={w:g}" if isinstance(w, (int, float)) else f"{v}={w}"
                    for v, w in weights.items())
    return clean_text(
        f"LATCHED: route {name} runs {ov.get('kind')} by {ov.get('actor')} at {ov.get('time')} "
        f"(stable {ov.get('stable')}{'; weights ' + said if said else ''}; "
        f"\"{ov.get('reason')}\"), not the file's weights in the table: `killgate release "
        f"{name}` hands it back to the file"
        + (f" (drill {drill.get('id')}: `killgate drill restore` undoes it)"
           if isinstance(drill := ov.get("drill"), dict) else ""), 4096)
