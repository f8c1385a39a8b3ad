"""What an admin API answer must be before a command believes it: a JSON object of a shape.

Owns `json_object` (the body read as a JSON object, else a ClientError), `Shape` (field ->
type, tuple of types, or a nested shape), the shapes every write answer shares (`RECEIPT`,
`APPROVAL`) and `expect`, which names the first field missing or of the wrong type: a
command must not print a success it cannot show. Standard library and cli/errors.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.cli.errors import ClientError

__all__ = ["APPROVAL", "RECEIPT", "Shape", "expect", "json_object"]


def json_object(raw: bytes, status: int) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # (RecursionError: `[[[[...` nested past the stack)
        raise ClientError(f"the admin API answered {status} with something that is not "
                          f"JSON it can read: {raw[:80]!r}") from None
    if not isinstance(body, dict):
        raise ClientError(f"the admin API answered {status} with JSON that is not an object")
    return body


# a shape: field -> type, tuple of types, or a nested shape (a dict)
Shape = Mapping[str, Any]

RECEIPT: Shape = {"generation": int, "applied": {"instances": int, "acked": int,
                                                 "elapsed_ms": (int, float),
                                                 "pending": list}}
APPROVAL: Shape = {"approval": {"id": str, "action": str, "needs": int, "approved_by": list,
                                "expires": str}}


def expect(body: dict[str, Any], shape: Shape, where: str = "") -> dict[str, Any]:
    """`body` if it has every field of `shape` with the right type; else a ClientError
    naming the first field that is missing or wrong (the command then exits 1: it must
    not print a success it cannot show)."""
    for name, want in shape.items():
        path = f"{where}.{name}" if where else name
        if name not in body:
            raise ClientError(f"unexpected answer from the admin API: no {path!r}")
        value = body[name]
        if isinstance(want, Mapping):
            if not isinstance(value, dict):
                raise ClientError(f"unexpected answer from the admin API: {path!r} is not "
                                  "an object")
            expect(value, want, path)
        elif isinstance(value, bool) and want is not bool and bool not in (
                want if isinstance(want, tuple) else (want,)):
            raise ClientError(f"unexpected answer from the admin API: {path!r} is a boolean")
        elif not isinstance(value, want):
            raise ClientError(f"unexpected answer from the admin API: {path!r} has the wrong "
                              "type")
    return body
