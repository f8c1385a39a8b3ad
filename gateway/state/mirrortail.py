"""The audit mirror's file end, under `<file>.lock`: the workers of `serve --workers N`
each run a mirror (state/mirror.py) over one file, and this is the only place its end is
read or written.

Owns the tail's repair and the append. Under the lock, the last whole line is verified
(its hash, its MAC with the audit key), then a torn tail (bytes after the last newline: a
write cut by a crash or a full disk) is cut off, unless it is a whole event that verifies
on its own (only its newline lost: the line is ended); only the events past the end are
appended. A file whose last line does not verify, or is not an event, is never cut.
Taken as it stood, a torn tail made the writer trust its own memory of the
end: a sibling behind appended again what was there already, and a line that did not
verify was continued. Blocking calls: run in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gateway.domain.audit import event_hash, mac_matches, parse_event
from gateway.log import event
from gateway.state.files import append_lines, flock_within

__all__ = ["TailUnverified", "append_after", "line_problem", "locked", "rotated_key",
           "verified_end"]

log = logging.getLogger("killgate.state")


class TailUnverified(Exception):
    """The file's last line does not verify: nothing is appended after it."""


def line_problem(ev: dict[str, Any], keys: Mapping[str, bytes], keyed: bool) -> str | None:
    """Why `ev` is not an event of the trail on its own (None: it is): its hash, and with
    `keys` its MAC (an event without one is taken only while `keyed` is False: one
    written before keyed audit)."""
    if ev.get("hash") != event_hash(ev):
        return "its hash does not match its content (edited)"
    if not keys:
        return None
    mac, kid = ev.get("mac"), ev.get("kid")
    if mac is None and not keyed:
        return None
    if not isinstance(kid, str) or kid not in keys:
        return f"it carries no MAC under a key this instance holds (kid {str(kid)[:16]!r})"
    if not mac_matches(keys[kid], ev):
        return "its MAC does not verify: re-sealed by someone without the audit key"
    return None


def rotated_key(ev: dict[str, Any], keys: Mapping[str, bytes]) -> bool:
    """Whether `ev`'s only fault is a MAC under a key id not in `keys` (the audit key
    rotated since it was written): its hash is its content's. The mirror takes such a last
    line of its own on its hash; the next event must continue it, and verify."""
    kid = ev.get("kid")
    return (bool(keys) and isinstance(ev.get("mac"), str) and isinstance(kid, str)
            and kid not in keys and ev.get("hash") == event_hash(ev))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """`<path>.lock` held (bounded wait: LockBusy, an OSError) for the block."""
    lockname = path.with_name(path.name + ".lock")
    fd = os.open(lockname, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "r+b") as lock:
        flock_within(lock.fileno(), lockname)  # (released as it closes)
        yield


def _split_end(data: bytes) -> tuple[bytes | None, bytes]:
    """The last line of `data` ended by a newline (without it; None: none) and what
    follows it (the torn tail, b"" when `data` ends with a newline)."""
    cut = data.rfind(b"\n")
    body = data[:cut].rstrip(b"\n") if cut >= 0 else b""
    return (body.rsplit(b"\n", 1)[-1] or None), data[cut + 1:]


def _read_end(path: Path) -> tuple[bytes, int]:
    """The file's last bytes, enough to hold its torn tail and its last whole line, and
    the offset they start at."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        block = 8192  # (a line is a few hundred bytes: more only for a longer one)
        while True:
            start = max(0, size - block)
            f.seek(start)
            data = f.read(size - start)
            cut = data.rfind(b"\n")
            if start == 0 or (cut >= 0 and b"\n" in data[:cut].rstrip(b"\n")):
                return data, start
            block *= 4


def verified_end(path: Path, keys: Mapping[str, bytes]) -> dict[str, Any] | None:
    """Under the lock (the caller's): the file's last event, verified on its own, after a
    torn tail was cut off (or ended, when it is a whole event: only its newline lost).
    None: no event in the file. Raises TailUnverified when the last line does not verify
    (it is never continued), OSError when the file cannot be read or cut. A last line
    whose MAC names a key id not in `keys` (`rotated_key`) is taken on its hash: after a
    rotation of the audit key with no event since, every restart stopped the mirror
    (AUDIT MIRROR STOPPED, its alarm) until the file was moved aside; whatever is appended
    after it continues it and verifies (the mirror's checks), so a line edited or added
    there is refused at the next event, as one that does not continue the file."""
    try:
        data, start = _read_end(path)
    except FileNotFoundError:
        return None
    last, tail = _split_end(data)
    if tail.strip():
        whole = parse_event(tail)
        if whole is not None and line_problem(whole, keys, False) is None:
            with open(path, "ab") as f:  # only its newline lost
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
            return whole
    # the last whole line first: a file whose end does not verify (edited, or not a mirror
    # at all: a path typed wrong) is refused as it is, never cut (its bytes are the
    # operator's evidence, or not ours)
    ev = None if last is None else parse_event(last)
    if (last is not None and ev is None) or (
            last is None and tail.strip() and not tail.lstrip().startswith(b"{")):
        raise TailUnverified("the mirror's own last line is not a JSON event")
    if ev is not None and (problem := line_problem(ev, keys, False)) is not None \
            and not rotated_key(ev, keys):
        raise TailUnverified(f"the mirror's own last line does not verify: {problem}")
    if tail:
        with open(path, "r+b") as f:
            f.truncate(start + len(data) - len(tail))
            f.flush()
            os.fsync(f.fileno())
        event(log, "audit_mirror_torn_tail_cut", logging.WARNING, path=str(path),
              bytes=len(tail), detail="a partial line at the mirror's end (a write cut by a "
                                      "crash or a full disk) was cut off; the events it held "
                                      "are copied again from the store")
    return ev


def append_after(path: Path, events: list[dict[str, Any]], after: str | None,
                 keys: Mapping[str, bytes] | None = None
                 ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Append `events` (they continue the event `after`) under the lock: only those past
    the file's verified last event (those before it a sibling appended already). Returns
    the events appended and the hash they continue; None for the events when the file's
    last event is neither `after` nor one of them (a sibling got further: the caller
    catches up from the file's end). Raises TailUnverified (nothing appended) when the
    file's last line does not verify."""
    with locked(path):
        ev = verified_end(path, keys or {})
        at = str(ev.get("hash")) if ev is not None else after  # (an empty file: as ever)
        if at != after:
            hashes = [e.get("hash") for e in events]
            if at not in hashes:
                return None, at
            events = events[hashes.index(at) + 1:]
        if events:
            append_lines(path, events)
        return events, at
