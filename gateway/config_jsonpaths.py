"""The JSON paths a shadow's config names (`ignore`, `answer_paths`, `redact`): their grammar.

Owns `parse_path` ('choices[*].message.content', '*.timestamp', '$.id' → tokens), the same
grammar as a JSON Schema pattern for `killgate schema`, and `Paths`, the pydantic type that
checks each path of a list. `domain/comparison.py` compiles the tokens. Imports only pydantic.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["PATH_PATTERN", "PathToken", "Paths", "parse_path"]

#: one step of a path: ("key", name), ("index", n), ("*", "") any key, ("[*]", "") any index
PathToken = tuple[str, str | int]
_STEP = re.compile(r"\.?(?:(\*)|([A-Za-z0-9_\-$@:]+))|\[(\*|\d{1,9})\]")


def parse_path(text: str) -> tuple[PathToken, ...]:
    """'choices[*].message.content' / 'id' / '*.timestamp' / 'outputs[0]' → tokens; a
    JSONPath root first ('$.id', '$[0].id') is the same path ('$.id' read as a key named
    '$' silently matched nothing: an ignored field still disagreed, a redacted one was
    kept). Raises ValueError naming the grammar."""
    if not isinstance(text, str) or not text or len(text) > 256:
        raise ValueError(f"{text!r} is not a JSON path (use a.b, items[*].id, *.timestamp)")
    if text in ("$", "$."):
        raise ValueError("'$' names the whole answer: name a field under it "
                         "($.id, $.items[*].id)")
    whole = text
    if text.startswith(("$.", "$[")):
        text = text[2:] if text[1] == "." else text[1:]
    out: list[PathToken] = []
    pos = 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None or (m.group(0).startswith(".") and pos == 0) or \
                (not m.group(0).startswith((".", "[")) and pos > 0):
            raise ValueError(f"{whole!r} is not a JSON path (use a.b, items[*].id, "
                             "*.timestamp; $.a.b too)")
        if m.group(1):
            out.append(("*", ""))
        elif m.group(2):
            out.append(("key", m.group(2)))
        elif m.group(3) == "*":
            out.append(("[*]", ""))
        else:
            out.append(("index", int(m.group(3))))
        pos = m.end()
    return tuple(out)


def _paths(v: Any) -> Any:
    if isinstance(v, list):
        for p in v:
            parse_path(p)
    return v


_KEY, _INDEX = r"(?:\*|[A-Za-z0-9_\-$@:]+)", r"\[(?:\*|\d{1,9})\]"
#: `parse_path`'s grammar as a JSON Schema pattern: `killgate schema` marks the paths
#: `killgate check` refuses (it took any string: an editor passed `a..b`)
PATH_PATTERN = (rf"^(?!\$\.?$)(?:\$\.(?=[^\[])|\$\.?(?=\[))?(?:{_KEY}|{_INDEX})"
                rf"(?:\.{_KEY}|{_INDEX})*$")
_PathText = Annotated[str, WithJsonSchema({"type": "string", "pattern": PATH_PATTERN,
                                           "maxLength": 256})]
Paths = Annotated[list[_PathText], BeforeValidator(_paths)]
