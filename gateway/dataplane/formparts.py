"""A multipart part's head read one way, or refused: its header fields, its
Content-Disposition's `name` and whether it is a file (`formpeek.py` reads the parts in the
peek window with it, `formscan.py` those that stream past it).

Whatever a form reader (python-multipart, so Starlette; aiohttp; Werkzeug) could read as
another name is refused (`Unreadable`): a bare CR or LF, a folded line or a field twice, a
Content-Disposition that is not form-data, repeats a parameter, uses an RFC 2231 form other
than an unquoted `filename*=` (aiohttp and Werkzeug decode `name*=` and `name*0=`), a
backslash in a quoted name or before a closing quote, a nested multipart part. Pure.
"""

from __future__ import annotations

import re

from gateway.dataplane.jsonpeek import Unreadable

__all__ = ["MAX_PART_HEAD", "near_model", "part_head", "part_name"]

MAX_PART_HEAD = 8192  # bytes of a part's head (its header fields)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# (no whitespace around `=`: Werkzeug reads `name = "model"` as no name at all)
_PARAM = re.compile(r"[ \t]*([^=; \t\"]+)=")


def near_model(name: bytes) -> bool:
    """A field name a reader could take for `model` that is not exactly `model`: in another
    case, with whitespace, or with leading slashes (aiohttp strips `\\` and `/` from the
    start of a quoted name: name="/model" is "model" there, "/model" to Starlette)."""
    return name != b"model" and name.strip(b" \t\r\n/\\").lower() == b"model"


def _disposition(value: str) -> tuple[str | None, bool]:
    """(name, whether it has a filename) of a part's Content-Disposition."""
    kind, _, rest = value.partition(";")
    if kind.strip(" \t").lower() != "form-data":
        raise Unreadable("a part's Content-Disposition is not 'form-data'")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        m = _PARAM.match(rest, i)
        if m is None:
            if rest[i:].strip(" \t;") == "":
                break
            raise Unreadable("a part's Content-Disposition cannot be read one way")
        key, i = m.group(1).lower(), m.end()
        if i < n and rest[i] == '"':
            if key == "filename*":  # (RFC 8187: an ext-value is never quoted; aiohttp
                # reads a quoted one as no parameter at all, python-multipart as a name)
                raise Unreadable("a part's Content-Disposition has a quoted filename*=; send "
                                 "it unquoted (RFC 8187: filename*=UTF-8''a%C3%A9.wav)")
            end = rest.find('"', i + 1)
            # (a backslash: aiohttp and Werkzeug unescape it, python-multipart keeps it, so
            # name="mo\\del" is "model" to some; before a quote, python-multipart reads
            # on past it. In another value, a Windows path filename="C:\\a\\b.wav", it
            # changes no reader's end of the value, nor so the part's name)
            if end < 0 or rest[end - 1] == "\\" or (key == "name" and "\\" in rest[i:end]):
                raise Unreadable("a part's Content-Disposition has an unterminated or "
                                 "escaped quoted value (a backslash in its name, or before "
                                 "a quote)")
            val, i = rest[i + 1:end], end + 1
        else:
            t = _TOKEN.match(rest, i)
            val, i = (t.group(), t.end()) if t else ("", i)
        if key in params or ("*" in key and key != "filename*"):
            # (aiohttp and Werkzeug decode name*= and continuations, name*0=, before or
            # instead of name=, python-multipart ignores them; filename*= names no field:
            # it makes a part a file for aiohttp and Werkzeug, not python-multipart)
            raise Unreadable("a part's Content-Disposition repeats a parameter or uses an "
                             "RFC 2231 form other than filename*= (name*=, name*0=); send "
                             "one plain name=\"...\"")
        params[key] = val
        rest_i = rest[i:].lstrip(" \t")
        if rest_i and (rest_i[0] != ";" or (len(rest_i) < n - i and rest[i - 1] != '"')):
            # (a token, then whitespace, then `;`: aiohttp reads name=model\t;x=1 as
            # "model\t", the others as "model")
            raise Unreadable("a part's Content-Disposition cannot be read one way")
        i = n - len(rest_i) + 1
    return params.get("name"), "filename" in params or "filename*" in params


def part_head(head: bytes) -> tuple[str | None, bool, dict[str, str]]:
    fields: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        if 10 in line or 13 in line or line[:1] in (b" ", b"\t"):  # (LF, CR: as ints, no
            # TypeError raised and dropped by `bytes.__contains__` for a bytes argument)
            raise Unreadable("a part's head has a bare CR or LF, or a folded line")
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name.decode("latin-1")) is None:
            raise Unreadable("a part's head has a line that is not a header field")
        key = name.decode("ascii").lower()  # (a token: ASCII)
        if key in fields:
            raise Unreadable(f"a part's head has more than one {key!r}")
        fields[key] = value.decode("latin-1").strip(" \t")
    disp = fields.get("content-disposition")
    if disp is None:
        raise Unreadable("a part has no Content-Disposition")
    if fields.get("content-type", "").lower().startswith("multipart/"):
        raise Unreadable("a part is itself multipart (deprecated by RFC 7578; form "
                         "readers differ on it); send each file as its own part")
    part, is_file = _disposition(disp)
    return part, is_file, fields


def part_name(head: bytes) -> str | None:
    """The name of a part whose head (its header fields, CRLF-separated) is `head`, read as
    the peek reads it; raises `Unreadable` for a head out of its grammar (`formscan.py`)."""
    return part_head(head)[0]
