"""Find the `model` field of a form body (multipart/form-data, x-www-form-urlencoded).

OpenAI's multipart endpoints (`/v1/audio/transcriptions`, `/v1/audio/translations`,
`/v1/images/edits`, `/v1/images/variations`) send `model` as a form field, not in JSON: read
only as JSON, such a request matched no `match.model` route, and one whose model was killed
went on by a catch-all (found by a hostile review). Pure and sans-I/O, like `jsonpeek`: it
reads bytes already held (the peek window) and refuses (`Unreadable`), never guesses,
whatever a backend's form reader could read differently: a `model` named twice, a part
head or a boundary line out of the grammar (bare LF, folded or repeated header fields,
escapes or RFC 2231 `name*=`, `name*0=` in a Content-Disposition, a preamble holding the
boundary), a `model` part that is a file, has a Content-Transfer-Encoding or a charset
other than UTF-8, a nested multipart part, an invalid percent escape, a raw `;` that
changes an urlencoded body's `model` for a reader splitting on it, a body that begins as a
JSON object (read as JSON by gin's `ShouldBindJSON` whatever its Content-Type: Ollama). What
every reader reads
one way is read: a preamble ending in CRLF (RFC 2046), an unquoted `filename*=` (RFC 8187)
on a part, a `;` that changes nothing.

Multipart: the parts are read in order until the `model` part; when the body goes on past
the window, what follows the `model` part is not read here (an audio file, megabytes: its
part heads are watched as it streams, `formscan.py`), and a body whose `model` part does
not end inside the window is refused. Urlencoded: the whole
body must lie in the window, as a JSON body's top-level members must.
"""

from __future__ import annotations

import re

from gateway.dataplane.formparts import MAX_PART_HEAD, near_model, part_head
from gateway.dataplane.jsonpeek import Ambiguous, ModelField, Unreadable, find_model

__all__ = ["BARE_BREAK", "CLOSE_AFTER", "MAX_MODEL", "MAX_PART_HEAD", "body_kind", "body_model", "form_kind"]

MAX_MODEL = 1024  # bytes of a form's `model` value
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# (unquoted: RFC 2046's characters that are also a token's, read alike by every reader)
_BTOKEN = re.compile(r"[0-9A-Za-z'+_\-.]{1,70}")
_BOUNDARY = ("the multipart/form-data Content-Type has no boundary that every form reader "
             "reads the same (RFC 2046: 1 to 70 characters, no space first or last; outside "
             "double quotes only letters, digits and ' + _ - .)")
_RAW = re.compile(rb"[\x00-\x20\x7f]")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")
_SEMI = re.compile(rb"[&;]")
#: a body that begins as a JSON object: gin's `ShouldBindJSON` (Ollama's handlers) reads
#: the first JSON value of a body whatever its Content-Type, a form's too (a multipart
#: body's preamble): a `model` there that the form, read as a form, does not have (after a
#: UTF-8 byte order mark too, which nlohmann's JSON parser, llama.cpp's, skips)
_JSON_FIRST = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*\{")
_JSON_LEAD = frozenset((b"{", b" ", b"\t", b"\r", b"\n", b"\xef"))  # (its first bytes: no
# regex call for a form that begins otherwise, '--boundary' or a field name)
_JSON_AS_FORM = ("the body is sent as a form but begins as a JSON object, which some "
                 "backends read as JSON whatever its Content-Type (Ollama), so its 'model' "
                 "cannot be checked; send JSON with 'Content-Type: application/json' (curl -d "
                 "sends a form's: add -H 'Content-Type: application/json')")
CLOSE_AFTER = ("the multipart close delimiter is followed by other bytes than CRLF (aiohttp "
               "reads on past a first line '--boundary--x' to later parts), so the body's "
               "'model' cannot be checked")
BARE_BREAK = ("a part's content has its boundary after a bare CR or LF (some readers, "
              "Werkzeug's, take that for a boundary line), so the body's 'model' cannot be "
              "checked")
_PAST = ("the body's form fields run past the gateway's peek window "
         "(server.model_peek_bytes) before its 'model' field ends, so its 'model' cannot be "
         "checked; send 'model' first (before any file), or raise the window")


def form_kind(ctype: str | None) -> tuple[str, str | None] | None:
    """('multipart', boundary) or ('urlencoded', None) for a form Content-Type, else None.
    Raises `Unreadable` for a multipart type whose boundary cannot be read one way."""
    if not ctype:
        return None
    if not ctype.isascii() or _CTL.search(ctype) is not None:
        # (aiohttp reads the media type with str.strip(): NBSP, NEL, U+3000 or FF around
        # `application/x-www-form-urlencoded` are taken off there, and it reads the form;
        # read here as no form, the request was routed by no `model` at all)
        raise Unreadable("the form body's Content-Type has a control or non-ASCII character "
                         "(some form readers strip it from the media type); send it in ASCII")
    media, _, params = ctype.partition(";")
    media = media.strip(" \t").lower()
    if media == "application/x-www-form-urlencoded":
        return "urlencoded", None
    if media != "multipart/form-data":
        return None
    boundary: str | None = None
    for param in params.split(";"):
        raw, eq, value = param.partition("=")
        name = raw.strip(" \t").lower()
        if name.startswith("boundary"):
            # (whitespace around `=`: Werkzeug reads no boundary, the others one)
            if boundary is not None or name != "boundary" or not eq \
                    or raw[-1:] in (" ", "\t") or value[:1] in (" ", "\t"):
                raise Unreadable("the multipart Content-Type names its boundary more than "
                                 "once or in another form than 'boundary=...'")
            value = value.strip(" \t")
            quoted = len(value) >= 2 and value[0] == value[-1] == '"'
            if quoted:
                value = value[1:-1]
            if not (_BCHARS if quoted else _BTOKEN).fullmatch(value) or value[:1] == " ":
                # (read apart otherwise: Werkzeug ends an unquoted value at a tspecial,
                # `boundary=Xy=Z` is 'Xy' there, 'Xy=Z' to aiohttp; aiohttp strips a
                # quoted one, `" XyZ"` is 'XyZ' there, ' XyZ' to Werkzeug: a form under
                # either boundary read by the gateway as the other's preamble)
                raise Unreadable(_BOUNDARY)
            boundary = value
    if boundary is None:
        raise Unreadable(_BOUNDARY)
    return "multipart", boundary


def body_kind(ctype: str | None, body: bytes | None = None) -> str:
    """What a body is read as for its `model`, for the messages that speak of it: "multipart
    form body", "urlencoded form body", "JSON body" (as `body_model` reads it), or, when
    `body` is given and is neither, "body (not a JSON object or a form)"."""
    try:
        kind = form_kind(ctype) if ctype is not None and "form" in ctype.lower() else None
    except Unreadable:
        kind = ("multipart", None)
    if kind is not None:
        return f"{kind[0]} form body"
    if body is None or body.lstrip(b" \t\r\n")[:1] == b"{":
        return "JSON body"
    return "body (not a JSON object or a form)"


def body_model(ctype: str | None, body: bytes, complete: bool) -> ModelField | None:
    """The body's `model` as its Content-Type says it is sent: a form's field, or JSON's
    (`jsonpeek.find_model`). `complete`: `body` is the whole body, else the peek window."""
    kind = form_kind(ctype) if ctype is not None and "form" in ctype.lower() else None
    if kind is None:
        return find_model(body, complete)
    if body[:1] in _JSON_LEAD and _JSON_FIRST.match(body) is not None:
        raise Unreadable(_JSON_AS_FORM)
    try:
        if kind[1] is None:
            return _urlencoded(body, complete)
        return _multipart(body, kind[1].encode("ascii"), complete)
    except Unreadable as exc:
        if "'model'" in str(exc):
            raise
        raise type(exc)(f"{exc}, so the body's 'model' cannot be checked") from None


def _value(raw: bytes) -> ModelField:
    if len(raw) > MAX_MODEL:
        raise Unreadable(f"the body's 'model' field is longer than {MAX_MODEL} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("the body's 'model' field is not valid UTF-8") from None
    return ModelField(text, -1, -1, True)


def _pct(raw: bytes) -> bytes:
    """Strict percent-decoding (`+` a space): a `%` not followed by two hex digits refused."""
    raw = raw.replace(b"+", b" ")
    if raw.count(b"%") != len(_PCT.findall(raw)):
        raise Unreadable("the form body has a '%' that is not a percent escape (%XX)")
    return _PCT.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def _urlencoded(body: bytes, complete: bool) -> ModelField | None:
    if not complete:
        raise Unreadable("the form body runs past the gateway's peek window "
                         "(server.model_peek_bytes), so its 'model' cannot be checked; send "
                         "a smaller body or raise the window")
    if _RAW.search(body) is not None:
        # (aiohttp strips trailing whitespace before it splits: `model=gpt-a\n` read as
        # gpt-a there, as no model here)
        raise Unreadable("the form body has raw whitespace or a control byte (some "
                         "readers strip them); percent-encode it")
    found = _pairs(body.split(b"&"))
    if 59 in body:  # (a `;`, as an int: `b";" in` costs a TypeError raised and dropped)
        # (python-multipart, aiohttp, Werkzeug and parse_qsl since Python 3.9.2 split on `&`
        # only; parse_qsl before, Django before 3.2, on `;` too: `x=1;model=gpt-a` is no
        # model to the first, gpt-a to the others. Read the same both ways, it is accepted)
        try:
            same = _pairs(_SEMI.split(body)) == found
        except Unreadable:
            same = False
        if not same:
            raise Unreadable("the form body has a raw ';' that changes its 'model' for "
                             "readers that split on ';' too; percent-encode it (%3B)")
    return found


def _pairs(pairs: list[bytes]) -> ModelField | None:
    found: ModelField | None = None
    for pair in pairs:
        name, _, value = pair.partition(b"=")
        name = _pct(name)
        if near_model(name):
            raise Unreadable("the form body has a field named like 'model' but not exactly "
                             "'model'")
        if name == b"model":
            if found is not None:
                raise Ambiguous("the form body has more than one 'model' field")
            found = _value(_pct(value))
    return found


def _multipart(body: bytes, boundary: bytes, complete: bool) -> ModelField | None:
    delim = b"--" + boundary
    first = body.find(delim)
    if first < 0:
        if not complete:
            raise Unreadable(_PAST)
        raise Unreadable("the multipart body has no boundary line")
    if first and body[first - 2:first] != b"\r\n":
        # a preamble (RFC 2046) ends with CRLF, and holds no other `--boundary`: aiohttp and
        # Werkzeug take a line "--boundary" after a bare LF, or a line "x--boundary", for
        # the first boundary (python-multipart refuses any preamble but CRLFs)
        raise Unreadable("the multipart preamble holds the boundary other than as its first "
                         "boundary line")
    sep = b"\r\n" + delim
    i = first + len(delim)
    found: ModelField | None = None
    while True:
        after = body[i:i + 2]
        if after == b"--":  # the close delimiter: the end of the form
            tail = body[i + 2:i + 4]
            if tail == b"\r\n" or (complete and tail == b""):
                return found
            if not complete and b"\r\n".startswith(tail):
                return _past(found)
            raise Unreadable(CLOSE_AFTER)
        if len(after) < 2 and not complete:
            return _past(found)
        if after != b"\r\n":
            raise Unreadable("a multipart boundary line is followed by other bytes than "
                             "CRLF or '--'")
        start = i + 2
        end = body.find(b"\r\n\r\n", start, start + MAX_PART_HEAD + 4)
        if end < 0:
            if not complete and len(body) - start < MAX_PART_HEAD + 4:
                return _past(found)
            raise Unreadable(f"a part's head is longer than {MAX_PART_HEAD} bytes or "
                             "does not end")
        name, is_file, fields = part_head(body[start:end])
        content = end + 4
        stop = body.find(sep, content)
        bare_break(body, delim, content, len(body) if stop < 0 else stop + 2)
        if name is not None and (name == "model" or near_model(name.encode())):
            if name != "model":
                raise Unreadable("a part is named like 'model' but not exactly 'model'")
            if found is not None:
                raise Ambiguous("the form body has more than one 'model' field")
            if is_file or "content-transfer-encoding" in fields:
                raise Unreadable("the body's 'model' part is a file or has a "
                                 "Content-Transfer-Encoding; send it as a plain field")
            ctype = fields.get("content-type")
            if ctype is not None and ctype.replace(" ", "").lower() not in (
                    "text/plain", "text/plain;charset=utf-8", 'text/plain;charset="utf-8"'):
                raise Unreadable("the body's 'model' part has a Content-Type other than "
                                 "text/plain in UTF-8")
            if stop < 0:
                if complete or len(body) - content <= MAX_MODEL:
                    if complete:
                        raise Unreadable("the multipart body does not end with its "
                                         "close delimiter")
                    raise Unreadable(_PAST)
                raise Unreadable(f"the body's 'model' field is longer than {MAX_MODEL} bytes")
            found = _value(body[content:stop])
        if stop < 0:
            if complete:
                raise Unreadable("the multipart body does not end with its close delimiter")
            return _past(found)
        i = stop + len(sep)


def bare_break(body: bytes, delim: bytes, start: int, end: int) -> None:
    """Refuse a `--boundary` in a part's content (`body[start:end]`) after a bare CR or LF:
    Werkzeug (Flask) takes `\n--boundary` and `\r--boundary` for a boundary line, so a part
    named `model` could follow it, unseen here (RFC 2046 and the others: CRLF only). One
    after other bytes is content to every reader; one after CRLF ends the part."""
    j = body.find(delim, start, end + len(delim) - 1)
    while j >= 0:
        if j == start or body[j - 1] in b"\r\n":
            raise Unreadable(BARE_BREAK)
        j = body.find(delim, j + 1, end + len(delim) - 1)


def _past(found: ModelField | None) -> ModelField | None:
    """The window ended inside the form: its `model`, if read, else refused."""
    if found is None:
        raise Unreadable(_PAST)
    return found
