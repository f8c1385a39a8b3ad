"""The local store's audit trail as read: every event, the events after a cursor (a byte
offset into `<path>.audit.jsonl`), the newest events from the end of the file with the
head the state file anchors, and pages newest first; a line that does not parse is shown
as unparseable (named by its line, or its offset), never dropped. Appending is the
commit's (local.py). A base of `local.LocalStore`; blocking file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import fcntl
from pathlib import Path
from typing import Any

from gateway.domain.audit import parse_event
from gateway.domain.auditpage import page_before
from gateway.errors import StoreUnavailable
from gateway.state.files import tail_lines
from gateway.state.localaux import LocalRecords
from gateway.state.store import Loaded

__all__ = ["LocalAudit"]


class LocalAudit(LocalRecords):
    """Reading the audit file of `LocalStore` (see the module docstring)."""

    audit_path: Path  # (LocalStore's)

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
                lines, offset, more = tail_lines(self.audit_path, limit)
            except FileNotFoundError:
                return head, [], False
            except OSError as exc:
                raise StoreUnavailable(f"cannot read {self.audit_path}: {exc.strerror}") from None
            out: list[dict[str, Any]] = []
            for i, line in enumerate(lines):
                ev = parse_event(line)  # (None: not JSON, not an object, nested too deep)
                if ev is not None:
                    out.append(ev)
                else:  # (named by its line number, as `_audit_from` names it)
                    with open(self.audit_path, "rb") as f:
                        n = len(f.read(offset).splitlines()) + i + 1
                    out.append({"id": f"line-{n}",
                                "unparseable": line.rstrip(b"\r\n").decode("utf-8", "replace")})
            return head, out[::-1], more

    async def audit_newest(self, limit: int) -> tuple[str | None, list[dict[str, Any]],
                                                      str | None]:
        """Read from the end of the trail (the console asks every 3 s: a whole read of a
        long trail held the GIL the data plane needs)."""
        head, page, more = await asyncio.to_thread(self._newest, limit)
        return head, page, page[-1].get("id") if more and page else None

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

    async def audit_since(self, cursor: str | None,
                          limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """The cursor is a byte offset into the audit file: each call reads only what was
        appended since."""
        events, end = await asyncio.to_thread(self._audit_from, int(cursor or 0), limit)
        return events, str(end)

    async def audit_page(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]],
                                                                        str | None]:
        return page_before(list(reversed(await self.audit_events())), limit, before)
