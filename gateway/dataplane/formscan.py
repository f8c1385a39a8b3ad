"""Watch every part head of a multipart body as it goes to its backend: one `model` only.

The peek (`formpeek.py`) reads a multipart body's `model` in the peek window and leaves the
rest (an audio file, megabytes) unread. A second `model` part after a file larger than the
window was not seen, and form readers keep different ones: Starlette (so FastAPI, vLLM and
most OpenAI-compatible servers) the LAST, aiohttp the first. A client could name a live
model first, to be routed by it, and a killed one last, to be served it (found by review).
So a multipart body routed by its `model` is fed here, chunk by chunk, before each chunk
is forwarded: any part head after the first `model` part that is named `model` (or like
it), or that cannot be read one way, raises (`Ambiguous`, `Unreadable`) before the bytes
that end it go out, and the exchange is aborted (`request.RefusedBody`: 400 `model_body`,
the backend connection closed, never reused).

Sans-I/O and bounded: a delimiter or a head split across chunks at any byte is kept in a
carry of at most len(delimiter)+1 bytes, a head of at most `MAX_PART_HEAD`; the body's
bytes are searched with `bytes.find` (no copy but the carry's), and nothing after the close
delimiter (the epilogue, which readers ignore) is read. The grammar is the peek's: a
preamble holds no `--boundary` but its last line's, a boundary line is followed by CRLF
or `--` only, the close delimiter by CRLF, and a `--boundary` in a part's content after a
bare CR or LF (Werkzeug's boundary line), or at its very start, is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.dataplane.formparts import MAX_PART_HEAD, near_model, part_name
from gateway.dataplane.formpeek import BARE_BREAK, CLOSE_AFTER, form_kind
from gateway.dataplane.jsonpeek import Ambiguous, Unreadable

__all__ = ["PartScanner", "scan_held", "scanner"]

_PREAMBLE, _HEAD, _BODY, _DONE = range(4)
_AFTER = ("a multipart boundary line is followed by other bytes than CRLF or '--', so "
          "the body's 'model' cannot be checked")


class PartScanner:
    """Fed a multipart body's bytes in order (`feed`); raises when a part past the first
    `model` one is named like `model`, or any part head is out of the peek's grammar."""

    __slots__ = ("_at0", "_carry", "_dash", "_head", "_held", "_lead", "_models", "_pos",
                 "_state")

    def __init__(self, boundary: bytes) -> None:
        self._dash = b"--" + boundary
        self._carry = b""  # the last bytes of the last piece (a boundary cut in two)
        self._pos = 0  # where in the carry the search goes on (what is before it is judged)
        self._at0 = True  # the carry (what is fed next) begins at the body's byte 0
        self._lead = 0  # where the current part's content begins, relative to the carry
        self._head = b""  # a part head cut in two: its first bytes
        self._models = 0
        self._state = _PREAMBLE
        self._held = b""  # the body's last bytes, not sent yet (`send`)

    @property
    def done(self) -> bool:
        """The close delimiter has been seen: what follows is not read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> None:
        state = self._state
        if state == _DONE or not data:
            return
        buf = self._carry + data if self._carry else data  # (at most len(dash)+1 copied)
        pos, lead, dash = self._pos, self._lead, self._dash
        keep = len(buf)  # (from where the bytes are kept for the next piece)
        while True:
            if state == _HEAD:
                pos = self._end_of_head(buf, pos)
                if pos < 0:
                    keep = pos = lead = len(buf)
                    break
                state, lead = _BODY, pos
                continue
            k = buf.find(dash, pos)
            if k < 0:
                keep = max(pos - 2, len(buf) - len(dash) - 1, 0)
                break
            if state == _BODY:
                if k - 2 >= lead and buf[k - 2:k] == b"\r\n":
                    pass  # a delimiter: the part ends
                elif k == lead or buf[k - 1:k] in (b"\r", b"\n"):
                    raise Unreadable(BARE_BREAK)  # (a boundary after a bare CR or LF)
                else:
                    pos = k + 1  # content: `--boundary` after other bytes
                    continue
            elif not (k == 0 and self._at0) and (k < 2 or buf[k - 2:k] != b"\r\n"):
                raise Unreadable("the multipart preamble holds the boundary other than "
                                 "as its first boundary line, so the body's 'model' "
                                 "cannot be checked")
            after = k + len(dash)
            if after + 2 > len(buf):
                keep, pos = max(k - 2, 0), k
                break
            two = buf[after:after + 2]
            if two == b"--":  # the close delimiter, if a CRLF follows (or nothing)
                if after + 4 > len(buf):
                    if not b"\r\n".startswith(buf[after + 2:]):
                        raise Unreadable(CLOSE_AFTER)
                    keep, pos = max(k - 2, 0), k
                    break
                if buf[after + 2:after + 4] != b"\r\n":
                    raise Unreadable(CLOSE_AFTER)
                state = _DONE
                break
            if two != b"\r\n":
                raise Unreadable(_AFTER)
            state, pos = _HEAD, after + 2
        self._state = state
        if state != _DONE:
            self._carry = buf[keep:]
            self._pos = max(pos - keep, 0)
            self._lead = max(lead - keep, -2)  # (-2: long before; only the last 2 bytes matter)
            self._at0 = self._at0 and keep == 0

    def send(self, data: bytes) -> bytes:
        """Feed `data`; what of the body may go out now: all but its last bytes (as many as
        "\r\n--boundary--\r\n"), held back until `end` finds the form closed; once
        the close delimiter is seen, everything (the epilogue is not read)."""
        self.feed(data)
        held = self._held + data if self._held else data
        tail = 0 if self._state == _DONE else len(self._dash) + 6
        if len(held) <= tail:
            self._held = held
            return b""
        self._held = held[len(held) - tail:] if tail else b""
        return held[:len(held) - tail] if tail else held

    def end(self) -> bytes:
        """The body ended: the bytes held back, once `finish` found the form closed."""
        self.finish()
        held, self._held = self._held, b""
        return held

    def finish(self) -> None:
        """The body ended: raises `Unreadable` unless the form was closed (its close
        delimiter seen, or at its very end without the CRLF). Starlette and aiohttp refuse
        a form that never closes or ends inside a part head; Werkzeug reads it as an empty
        form: a backend behind a catch-all could find no `model`, or another."""
        if self._state == _DONE:
            return
        carry = self._carry
        if self._state == _BODY and carry.endswith(self._dash + b"--") and (
                carry[:-len(self._dash) - 2].endswith(b"\r\n")):
            return
        where = "inside a part's head" if self._state == _HEAD else "before its close delimiter"
        raise Unreadable(f"the multipart body ends {where} ('--' + boundary + '--'), so "
                         "the body's 'model' cannot be checked")

    def _end_of_head(self, buf: bytes, pos: int) -> int:
        """Where the part's content begins in `buf` once the head that begins at `pos` (after
        `_head`, its bytes from earlier pieces) has ended and been judged; -1 when it goes on
        past `buf` (kept in `_head`, no copy of the content after it)."""
        held = self._head
        limit = MAX_PART_HEAD + 4  # (a head's bytes and its CRLFCRLF)
        if held:
            head = held + buf[pos:pos + limit]
            end = head.find(b"\r\n\r\n", max(0, len(held) - 3), limit)
        else:
            head = buf
            end = buf.find(b"\r\n\r\n", pos, pos + limit)
        if end < 0:
            got = len(head) - (0 if held else pos)
            if got >= limit:
                raise Unreadable(f"a part's head is longer than {MAX_PART_HEAD} bytes, so "
                                 "the body's 'model' cannot be checked")
            self._head = head[0 if held else pos:]
            return -1
        self._head = b""
        if held:
            self._part(head[:end])
            return pos + end + 4 - len(held)
        self._part(buf[pos:end])
        return end + 4

    def _part(self, head: bytes) -> None:
        try:
            name = part_name(head)
        except Unreadable as exc:
            raise Unreadable(f"{exc}, so the body's 'model' cannot be checked") from None
        if name is not None and (name == "model" or near_model(name.encode())):
            if name != "model":
                raise Unreadable("a part is named like 'model' but not exactly 'model'")
            self._models += 1
            if self._models > 1:
                raise Ambiguous("the form body has more than one 'model' field (a second "
                                "one after the peek window: form readers keep different "
                                "ones); send 'model' once")


def scanner(headers: Mapping[str, str]) -> PartScanner | None:
    """A scanner for a request whose body is multipart (its `model` read as a form
    field), else None."""
    try:
        kind = form_kind(headers.get("content-type"))
    except Unreadable:
        return None  # (refused at the peek already)
    if kind is None or kind[1] is None:
        return None
    return PartScanner(kind[1].encode("ascii"))


def scan_held(headers: Mapping[str, str], body: bytes) -> None:
    """Scan a multipart body held in memory (more of it than the peek window read) as it
    would be on its way; raises `Unreadable` as `PartScanner.feed` does."""
    scan = scanner(headers)
    if scan is not None:
        scan.feed(body)
        scan.finish()
