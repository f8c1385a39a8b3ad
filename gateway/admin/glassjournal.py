"""Break-glass uses a process began and may not have counted: a file each, beside the state
snapshot (`<state.snapshot_path>.glass/`), so that a use whose process died between its
commit and its count (SIGKILL, the OOM killer, a node lost) is counted at the next start.

The count (`killgate_break_glass_total`, breakglass.py) follows the commit's answer; a
process killed in between left the trail's event (committed with the state in one script)
and no count in any process, so an alert on the counter never saw the use. Now, before a
break-glass write is committed, its audit event's id (drawn here: the event's own) is
written to a file named by the process's pid; the file goes once the use is counted, or
once it is known not applied (refused, or no change). A starting process takes the files of
processes that are gone (or of its own pid: a container's pid 1 restarted; or of a pid that
runs but is another process now: the file names the boot and the start of its writer, and
a node restarted reuses pids, another user's too, where such a file stayed for good; never
one whose writer's lock is still held, wherever that writer runs: glasslock.py), each by a
rename to its own pid (one taker among sibling workers starting at once), and looks for the
event in the trail's newest events (`reconcile`): there, genuine (its hash and MAC under a
state key) and marked `break_glass`, the use is counted, `learned="at a start, from the
audit trail"`; not there, it was not applied (event and state commit together), and the
file goes; but one not among the trail's newest MAX_SCAN events when they do not reach back
to its time is not known not applied: said (WARNING break_glass_unresolved, its audit id),
never dropped unsaid. Nothing kept in Redis decides it: a file names an id, and only a
genuine event of that id counts it, once (an id two files name, once; an id counted at an
earlier start, kept in the folder's `counted.json` and recorded in the trail by an audited
`breakglass.counted`, not again: glasscounted.py), as that
event says (its action, actor, target and reason; never the file's words). A store that
cannot be read keeps the file for the next start. Without a snapshot folder it cannot be
created in, nothing is kept (said once, `break_glass_journal_off`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway import procstart
from gateway.admin import glasscounted, glasslock
from gateway.admin.ports import AuditReader
from gateway.domain.audit import AuditDraft, genuine, new_event_id
from gateway.log import event

__all__ = ["MAX_SCAN", "STOP_BEFORE_COUNT_ENV", "Journal", "test_stop_before_count"]

log = logging.getLogger("killgate.admin")

#: the most of the trail's newest events read for one start's leftovers
MAX_SCAN = 4096
#: how far back of a file's time the trail is read (clocks of other writers may differ)
SLACK = 600.0
#: how often, and how long, a start tries to read the trail while the store does not answer
RETRY, TRY_FOR = 1.0, 600.0


#: tests only (tests/test_breakglass_sigkill.py): a process with it set to "1" is killed
#: (SIGKILL) between a break-glass write's commit and its count, as the OOM killer may;
#: never set in production (read only on a break-glass write)
STOP_BEFORE_COUNT_ENV = "KILLGATE_TEST_SIGKILL_BEFORE_GLASS_COUNT"


def test_stop_before_count() -> None:
    if os.environ.get(STOP_BEFORE_COUNT_ENV) == "1":
        os.kill(os.getpid(), signal.SIGKILL)


class Journal:
    """The files of this process's break-glass uses not yet counted."""

    def __init__(self, folder: Path | None) -> None:
        self.dir = folder
        self.pid = os.getpid()
        self._off_said = False
        #: this boot of the host, and this process's start (clock ticks since the boot):
        #: a file's pid that runs is another process's after a reboot or a pid's reuse
        self.boot, self.start = procstart.boot_id(), procstart.start_of(self.pid)

    def begin(self, glass: dict[str, Any]) -> tuple[str, Path | None]:
        """An audit event id for a break-glass write about to be committed, and its file
        (None: not kept)."""
        eid = new_event_id()
        if self.dir is None:
            return eid, None
        path = self.dir / f"{self.pid}-{eid}.json"
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"id": eid, "time": time.time(), "glass": glass, "pid": self.pid,
                           "boot": self.boot, "start": self.start,
                           "lock": glasslock.mine(self.dir)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            if not self._off_said:
                self._off_said = True
                event(log, "break_glass_journal_off", logging.WARNING, path=str(self.dir),
                      error=str(exc), consequence="a break-glass use whose process dies "
                      "before counting it is not counted at the next start")
            return eid, None
        return eid, path

    @staticmethod
    def done(path: Path | None) -> None:
        """Counted, or known not applied: the file goes."""
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def leftovers(self) -> list[tuple[Path, dict[str, Any]]]:
        """The files of processes that are gone (or of this pid, from before this
        process), each taken by a rename to this pid; what each holds."""
        if self.dir is None:
            return []
        try:
            names = sorted(os.listdir(self.dir))
        except OSError:
            return []
        out = []
        for name in names:
            pid, _, rest = name.partition("-")
            if not name.endswith(".json") or not pid.isdigit() or not rest:
                continue
            doc = _peek(self.dir / name)
            if glasslock.held(self.dir, doc.get("lock")):
                continue  # (its writer runs, wherever: a host sharing the folder, another
                #           container, this process; glasslock.py)
            if int(pid) != self.pid and procstart.alive(int(pid)) \
                    and not self._of_another(doc, int(pid)):
                continue  # (a running sibling's use, being committed; a zombie's is taken)
            mine = self.dir / f"{self.pid}-{rest}"
            try:
                if int(pid) != self.pid:
                    os.rename(self.dir / name, mine)  # (another taker was first: gone)
                entry = json.loads(mine.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) \
                    and isinstance(entry.get("glass"), dict) \
                    and isinstance(entry.get("time"), int | float):
                out.append((mine, entry))
            else:
                self.done(mine)
        glasslock.sweep(self.dir)  # (the locks of processes that ended)
        return out

    def _of_another(self, doc: dict[str, Any], pid: int) -> bool:
        """Whether the file holding `doc`, named by `pid` that runs, is of a process that is
        gone all the same: written before this boot of the host (a node restarted: its
        pids are other processes', another user's too, and each such file was skipped for
        good, the use never counted, unsaid), or by an earlier process of that pid (its
        start differs; only while the file is its writer's own, not yet taken)."""
        boot, start = doc.get("boot"), doc.get("start")
        if isinstance(boot, str) and self.boot is not None and boot != self.boot:
            return True
        return doc.get("pid") == pid and isinstance(start, int) \
            and (now := procstart.start_of(pid)) is not None and now != start

    async def reconcile(self, trail: AuditReader,
                        count: Callable[[dict[str, Any], str], None],
                        record: Callable[[AuditDraft], Awaitable[Any]] | None = None) -> None:
        """Count the leftovers whose events are in the trail; drop those not there.
        `record`: appends the audit event that records a use counted (glasscounted.py)."""
        left = self.leftovers()
        if not left:
            return
        until = asyncio.get_running_loop().time() + TRY_FOR
        while True:
            try:
                found, done, whole = await _events(trail, {e["id"] for _, e in left},
                                                   min(e["time"] for _, e in left) - SLACK)
                break
            except Exception as exc:  # noqa: BLE001 - the store's errors: try again
                if asyncio.get_running_loop().time() >= until:
                    event(log, "break_glass_unresolved", logging.WARNING,
                          audit_ids=[e["id"] for _, e in left], error=str(exc),
                          detail="break-glass uses of a process that ended before counting "
                                 "them: the trail could not be read; tried at the next start")
                    return
                await asyncio.sleep(RETRY)
        uses: dict[str, dict[str, Any]] = {}  # (one use, however many files name it)
        for _, entry in left:
            ev = found.get(entry["id"])
            keys = trail.audit_keys
            if ev is None and not whole:
                # (not among the newest MAX_SCAN events, which did not reach back to its
                # time: no sign that it was not applied; dropped as "not applied", a use
                # made before a flood of events, denied calls say, went uncounted unsaid)
                event(log, "break_glass_unresolved", logging.WARNING,
                      audit_ids=[entry["id"]], action=entry["glass"].get("action"),
                      actor=entry["glass"].get("actor"),
                      detail=f"a break-glass use of a process that ended before counting "
                             f"it: the trail's newest {MAX_SCAN} events do not reach back "
                             "to its time, so whether it was applied is not known here; "
                             "look for this audit id in the trail (GET /v1/audit); "
                             "not counted")
            elif ev is not None and ev.get("break_glass") is True \
                    and isinstance(ev.get("action"), str) \
                    and (not keys.enabled or genuine(ev, keys.keys())):
                uses.setdefault(entry["id"], _use(ev, entry["glass"]))
        if uses and self.dir is not None:
            new, error = glasscounted.claim(self.dir, list(uses))
            if error is not None:
                event(log, "break_glass_journal_off", logging.WARNING, path=str(self.dir),
                      error=error, consequence="the uses counted now may be counted again "
                                               "at the next start")
            new = [eid for eid in new if eid not in done]  # (the trail's record: glasscounted.py)
            for eid in set(uses) - set(new):
                event(log, "break_glass_counted_before", logging.WARNING, audit_ids=[eid],
                      detail="a file of a break-glass use already counted at an earlier "
                             "start (re-created since): not counted again")
            for eid in new:
                count(uses[eid], "at a start, from the audit trail (the process that "
                                 "made it ended before counting it)")
                await _record(record, eid, uses[eid])
        for path, _ in left:
            self.done(path)


def _use(ev: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """A use as counted: who, what and why from its genuine event (a file's words, which
    whoever can write the folder chooses, never relabel it); how many approvals it skipped
    and its caller's address, which the event does not hold, from its file."""
    skipped, peer = kept.get("approvals_skipped"), kept.get("peer")
    return {"action": ev["action"], "actor": ev.get("actor"), "target": ev.get("target"),
            "reason": ev.get("reason"),
            "approvals_skipped": skipped if isinstance(skipped, int) else None,
            "peer": peer[:64] if isinstance(peer, str) else None}


def _peek(path: Path) -> dict[str, Any]:
    """A file's fields as far as they can be read ({}: none)."""
    try:
        doc = json.loads(path.read_bytes()[:65536])
    except (OSError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


async def _record(record: Callable[[AuditDraft], Awaitable[Any]] | None, eid: str,
                  use: dict[str, Any]) -> None:
    """The trail's record of a use counted at a start (best effort: said when not made)."""
    if record is None:
        return
    try:
        await record(glasscounted.draft(eid, use))
    except Exception as exc:  # noqa: BLE001 - the store's errors: the file stays the record
        event(log, "break_glass_count_unrecorded", logging.WARNING, audit_ids=[eid],
              error=str(exc), consequence="counted, but not recorded in the audit trail: "
              f"only {glasscounted.NAME} beside the journal keeps a later start from "
              "counting it again")


async def _events(trail: AuditReader, ids: set[str],
                  since: float) -> tuple[dict[str, Any], set[str], bool]:
    """The events of `ids` among the trail's newest (MAX_SCAN at most, back to `since`),
    the ids of them the trail records as counted at an earlier start (genuine
    `breakglass.counted` events: newer than the use's, so met first), and whether the read
    was whole: it reached `since`, or the trail's end (one not found then was not applied),
    or found them all."""
    found: dict[str, Any] = {}
    done: set[str] = set()
    keys = trail.audit_keys.keys() if trail.audit_keys.enabled else None
    before: str | None = None
    read = 0
    while read < MAX_SCAN and len(found) < len(ids):
        page, before = await trail.audit_page(min(256, MAX_SCAN - read), before)
        read += len(page) or MAX_SCAN
        for ev in page:
            if ev.get("id") in ids:
                found[ev["id"]] = ev
            elif (eid := glasscounted.marked(ev, ids, keys)) is not None:
                done.add(eid)
        if before is None or any(_older(ev, since) for ev in page[-1:]):
            return found, done, True
    return found, done, len(found) == len(ids)


def _older(ev: dict[str, Any], since: float) -> bool:
    from datetime import datetime

    t = ev.get("time")
    try:
        return isinstance(t, str) and datetime.fromisoformat(t.replace("Z", "+00:00")) \
            .timestamp() < since
    except ValueError:
        return False
