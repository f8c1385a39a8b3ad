"""The local store's audit trail as read: every event, the events after a cursor (a byte
offset into `<path>.audit.jsonl` and the hash of the event before it: a trim rewrites the
file, localtrim.py), the newest events from the end of the file with the head the state
file anchors, and pages newest first (the page after one handed out read back from where
it ended: a walk back through a long trail, occurrence.py, read the whole file for every
page); a line that does not parse is shown as unparseable
(named by its line, or its offset), never dropped. Appending is the commit's (local.py).
A base of `local.LocalStore`; blocking file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from gateway.domain.audit import parse_event
from gateway.domain.auditcut import trail_cuts
from gateway.domain.auditpage import page_before
from gateway.errors import StoreUnavailable
from gateway.state.files import lines_before
from gateway.state.localaux import LocalRecords
from gateway.state.store import Loaded

__all__ = ["MARKS", "LocalAudit"]

#: the pages handed out whose oldest entry's place in the file is remembered (`audit_page`)
MARKS = 16


class LocalAudit(LocalRecords):
    """Reading the audit file of `LocalStore` (see the module docstring)."""

    audit_path: Path  # (LocalStore's)
    #: where the oldest entry of each of the last MARKS pages handed out starts (its id ->
    #: the file's inode and the byte offset: `_page_at`; LocalStore's)
    _marks: OrderedDict[str, tuple[int, int]]

    def _read(self) -> Loaded:
        """The state file as read (LocalStore's)."""
        raise NotImplementedError

    def _newest(self, limit: int) -> tuple[str | None, list[dict[str, Any]], bool]:
        """The anchored head, the newest `limit` events (newest first) and whether older
        ones exist, read under the commit's lock (shared): a commit appends its event
        before it writes the state file that anchors it."""
        with self._locked(fcntl.LOCK_SH):
            try:
                doc = self._read().doc
            except StoreUnavailable:
                doc = None
            head = (doc.audit_head or None) if doc is not None else None
            try:
                with open(self.audit_path, "rb") as f:
                    lines, offset, more = lines_before(f, limit, f.seek(0, os.SEEK_END))
                    inode = os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                return head, [], False
            except OSError as exc:
                raise StoreUnavailable(f"cannot read {self.audit_path}: {exc.strerror}") from None
            out = self._entries(lines, offset)
            if more and out:
                self._mark(out[0], inode, offset)
            return head, out[::-1], more

    async def audit_newest(self, limit: int) -> tuple[str | None, list[dict[str, Any]],
                                                      str | None]:
        """Read from the end of the trail (the console asks every 3 s: a whole read of a
        long trail held the GIL the data plane needs)."""
        head, page, more = await asyncio.to_thread(self._newest, limit)
        return head, page, page[-1].get("id") if more and page else None

    def _entries(self, lines: list[bytes], offset: int) -> list[dict[str, Any]]:
        """`lines`, read from byte `offset` on, as the trail's entries (oldest first): an
        unparseable line named by its line number, as `_audit_from` names it."""
        out: list[dict[str, Any]] = []
        for i, line in enumerate(lines):
            ev = parse_event(line)  # (None: not JSON, not an object, nested too deep)
            if ev is not None:
                out.append(ev)
            else:
                with open(self.audit_path, "rb") as f:
                    n = len(f.read(offset).splitlines()) + i + 1
                out.append({"id": f"line-{n}",
                            "unparseable": line.rstrip(b"\r\n").decode("utf-8", "replace")})
        return out

    def _mark(self, oldest: dict[str, Any], inode: int, offset: int) -> None:
        """Remember where a page's oldest entry (an event) starts: the next page is read
        back from there (`_page_at`)."""
        if "unparseable" in oldest or not isinstance(oldest.get("id"), str):
            return
        marks = self._marks  # (each step one call: readers in other threads at once)
        marks.pop(oldest["id"], None)
        marks[oldest["id"]] = (inode, offset)
        while len(marks) > MARKS:
            with contextlib.suppress(KeyError):
                marks.popitem(last=False)

    def _page_at(self, limit: int, before: str) -> tuple[list[dict[str, Any]], str | None] | None:
        """`audit_page`'s page read back from where the entry `before` starts, marked when
        its page was handed out; None: not marked, or the file holds it there no more (a
        trim rewrote it)."""
        mark = self._marks.get(before)
        if mark is None:
            return None
        try:
            with open(self.audit_path, "rb") as f:
                if os.fstat(f.fileno()).st_ino != mark[0]:
                    return None
                f.seek(mark[1])
                there = parse_event(f.readline())
                if there is None or there.get("id") != before or "unparseable" in there:
                    return None
                lines, offset, more = lines_before(f, limit, mark[1])
                out = self._entries(lines, offset)
                if more and out:
                    self._mark(out[0], mark[0], offset)
        except OSError:
            return None  # (read whole: it says why)
        page = out[::-1]
        return page, page[-1].get("id") if more and page else None

    def _audit_all(self) -> list[dict[str, Any]]:
        return self._audit_from(0, None)[0]

    def _audit_from(self, offset: int, limit: int | None) -> tuple[list[dict[str, Any]], int]:
        """Complete lines from byte `offset` on (at most `limit`), and the offset after them.
        Only the part of the file after `offset` is read."""
        try:
            with open(self.audit_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset
        except OSError as exc:  # (a file left by a run as another user: a 503 saying so)
            raise StoreUnavailable(f"cannot read {self.audit_path}: {exc.strerror}") from None
        out: list[dict[str, Any]] = []
        for n, line in enumerate(data.splitlines(keepends=True), 1):
            if limit is not None and (len(out) == limit or not line.endswith(b"\n")):
                break  # enough, or a line still being written (the whole read shows it)
            ev = parse_event(line)  # (None: not JSON, not an object, nested too deep)
            if ev is not None:
                out.append(ev)
            else:
                where = f"line-{n}" if limit is None else f"offset-{offset}"
                out.append({"id": where,
                            "unparseable": line.rstrip(b"\r\n").decode("utf-8", "replace")})
            offset += len(line)
        return out, offset

    async def audit_events(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._audit_all)

    def _resume(self, cursor: str | None) -> int:
        """The byte offset an `audit_since` cursor names: "END" (an offset, as written
        before trims existed) or "END:HASH", the offset after the event with that hash. A
        trim rewrites the file: when the line ending at END is no longer that event, the
        event is looked for; gone (trimmed), reading starts over at the first line kept
        (a mirror that missed the events trimmed then refuses: it cannot continue)."""
        end_s, _, want = (cursor or "0").partition(":")
        if not end_s.isdigit() or len(end_s) > 18:
            return 0  # (a cursor that does not parse: read from the start; a mirror skips
            # what its file holds)
        end = int(end_s)
        if not want:
            return end
        try:
            with open(self.audit_path, "rb") as f:
                size, window = f.seek(0, os.SEEK_END), 4096
                while 0 < end <= size and window <= 1 << 24:
                    lo = max(0, end - window)
                    f.seek(lo)
                    body = f.read(end - lo)
                    cut = body[:-1].rfind(b"\n")
                    if body.endswith(b"\n") and (cut >= 0 or lo == 0):
                        ev = parse_event(body[cut + 1:])
                        if ev is not None and ev.get("hash") == want:
                            return end  # (the usual case: nothing was trimmed)
                        break
                    window *= 4
                f.seek(0)
                offset = 0
                for line in f:  # (after a trim: where that event is now, if kept)
                    offset += len(line)
                    ev = parse_event(line)
                    if ev is not None and ev.get("hash") == want:
                        return offset
        except FileNotFoundError:
            pass
        return 0

    async def audit_since(self, cursor: str | None,
                          limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """The cursor is a byte offset into the audit file and the hash of the event before
        it (`_resume`): each call reads only what was appended since."""

        def read() -> tuple[list[dict[str, Any]], int]:
            return self._audit_from(self._resume(cursor), limit)

        events, end = await asyncio.to_thread(read)
        last = events[-1].get("hash") if events else None
        if not events:
            return events, cursor if cursor is not None else str(end)
        return events, f"{end}:{last}" if isinstance(last, str) else str(end)

    async def audit_page(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]],
                                                                        str | None]:
        """A page older than the entry `before` names: read back from where that entry
        starts when a page handed out ended with it (`occurrence.walk` pages back through
        a long trail: each page read and parsed the whole file), else from the whole file."""
        if before is not None and (
                got := await asyncio.to_thread(self._page_at, limit, before)) is not None:
            return got
        events = await self.audit_events()
        first = events[0].get("prev_hash") if events else None
        trimmed = isinstance(first, str) and first in trail_cuts(events)
        return page_before(list(reversed(events)), limit, before, trimmed)
