"""A walk back through a local store's long audit trail (occurrence.py `walk`: a fresh
reload claim's `change_event`, up to NEAR entries, on every reload since revleft; a claim
naming an event, up to SCAN) read one page at a time, and each page (`audit_page`) read
and parsed the WHOLE file: a reload on a 50,000-event trail parsed 200,000 lines (1.4 s in
a thread holding the GIL the data plane needs), a named claim's look 4.95 million (33 s).
A page now reads back from where the page before it ended (its oldest entry's offset,
remembered when handed out, checked before it is used): the lines read follow the pages
asked for, not the trail's length; what a page says is what the whole read said.

Real files, a real LocalStore; parse_event counted (no socket crossed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.control.occurrence import NEAR, change_event, occurrence_of
from gateway.domain.audit import AuditDraft, parse_event, seal
from gateway.domain.auditpage import page_before
from gateway.state import localaudit
from gateway.state.local import LocalStore
from gateway.state.signing import Key, Keyring

pytestmark = pytest.mark.timeout(60)

KEY = "config:aaa:bbb:tok"


async def _trail(tmp_path: Path, n: int, reload_at: int | None = None,
                 junk_at: int | None = None) -> LocalStore:
    """A local store whose trail holds `n` + 2 genuine events, anchored; the one
    `reload_at` events from the end of the written ones a `config.reload` of KEY's
    change; an unparseable line `junk_at` from the end."""
    store = LocalStore(tmp_path / "state.json", keys=Keyring(Key.of(b"k" * 32), context="local"))
    await store.open()
    await store.commit(None, (await store.load()).doc or _doc(), _draft("first"))
    prev, key = (await store.audit_events())[-1]["hash"], store.audit_keys.current
    assert key is not None
    with store.audit_path.open("a") as f:
        for i in range(n):
            back = n - i
            if back == junk_at:
                f.write("{not an event\n")
            draft = _draft(f"r{i}") if back != reload_at else AuditDraft(
                "killgate/config", "config.reload", {"config": "bbb"}, "the config changed",
                {"digest": "aaa"}, {"digest": "bbb", "occurrence": occurrence_of(KEY)})
            ev = seal(draft.as_event(), prev, (key.kid, key.secret))
            f.write(json.dumps(ev) + "\n")
            prev = ev["hash"]
    doc = (await store.load()).doc
    assert doc is not None
    await store.commit(str(doc.generation), doc.with_changes(generation=doc.generation + 1),
                       _draft("last"))
    return store


def _doc() -> Any:
    from gateway.domain.statedoc import StateDoc

    return StateDoc(generation=1)


def _draft(reason: str) -> AuditDraft:
    return AuditDraft(actor="alice", action="kill", target={"route": "iris"}, reason=reason)


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    parsed = [0]

    def counting(line: bytes) -> dict[str, Any] | None:
        parsed[0] += 1
        return parse_event(line)

    monkeypatch.setattr(localaudit, "parse_event", counting)
    return parsed


async def test_a_walk_back_reads_the_pages_it_asks_for_not_the_whole_trail_each_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await _trail(tmp_path, 3000, reload_at=900)
    parsed = _counted(monkeypatch)
    found = await change_event(store, KEY)  # (900 back: five pages)
    assert found is not None
    assert parsed[0] <= 2 * NEAR, parsed  # (main: the tail, then 3,000 lines a page)
    parsed[0] = 0
    assert await change_event(store, "config:aaa:ccc:tok") is None  # (none: NEAR read)
    assert parsed[0] <= 2 * NEAR, parsed


async def test_the_pages_read_back_are_those_of_the_whole_read(
        tmp_path: Path) -> None:
    """Every page, an unparseable line among them (named by its line, as the whole read
    names it), as `page_before` over the whole file gives it."""
    store = await _trail(tmp_path, 700, junk_at=333)
    whole = list(reversed(await store.audit_events()))
    assert any("unparseable" in e for e in whole)
    _, page, nxt = await store.audit_newest(50)
    got = list(page)
    while nxt is not None:
        want = page_before(whole, 50, nxt)
        assert nxt in getattr(store, "_marks", {}), nxt  # (read back from its place)
        page, nxt = await store.audit_page(50, nxt)
        assert (page, nxt) == want
        got += page
    assert got == whole


async def test_a_trail_rewritten_since_its_page_is_read_whole(tmp_path: Path) -> None:
    """A trim writes the trail anew (another file): the place remembered is not used;
    nor is one whose bytes are no longer that event."""
    store = await _trail(tmp_path, 400)
    _, _, nxt = await store.audit_newest(100)
    assert nxt is not None
    whole = list(reversed(await store.audit_events()))
    copy = store.audit_path.with_name("copy")
    copy.write_bytes(store.audit_path.read_bytes())
    os.replace(copy, store.audit_path)  # (another inode, as localtrim's atomic_write)
    assert await store.audit_page(100, nxt) == page_before(whole, 100, nxt)
    # the same file, the line at the place remembered changed: read whole
    _, _, nxt = await store.audit_newest(100)
    assert nxt is not None
    offset = store._marks[nxt][1]
    with store.audit_path.open("r+b") as f:
        f.seek(offset)
        f.write(b"X")
    whole = list(reversed(await store.audit_events()))
    with pytest.raises(Exception, match="cursors are its events' ids"):
        page_before(whole, 100, nxt)
    with pytest.raises(Exception, match="cursors are its events' ids"):
        await store.audit_page(100, nxt)
