"""A request's fields as text, by name (`HeaderView`, `request.Request.headers`): decoded
on demand, since routing reads a handful of them; a field the gateway cannot read the one
way every backend would (not UTF-8, repeated, or `_` for `-`) is `BadHeader` (400). Pure:
imports nothing of the gateway's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["BadHeader", "HeaderView"]


class BadHeader(ValueError):
    """A field routing reads is not valid UTF-8, or comes more than once (400; `reason` is
    the label of `killgate_bad_requests_total`)."""

    def __init__(self, message: str, reason: str = "header_encoding") -> None:
        super().__init__(message)
        self.reason = reason


class HeaderView(Mapping[str, str]):
    """Case-insensitive, read-only text view of raw fields, decoded on demand: routing reads
    a handful of fields (Host, match headers, sticky, pins), so nothing else is decoded. A
    value that is not UTF-8, a field read by name that comes more than once, or one spelled
    with `_` for `-` or `-` for `_` (`X_Tenant`, which WSGI backends read as `X-Tenant`),
    raises `BadHeader`: one the gateway cannot read the one way every backend would (a
    backend may take the last of two, or join them, where routing would take the first)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get_bytes(self, name: bytes) -> bytes | None:
        for n, v in self.raw:
            if len(n) == len(name) and n.lower() == name:
                return v
        return None

    def __getitem__(self, key: str) -> str:
        name = key.lower().encode("latin-1")
        v = None
        for n, value in self.raw:
            if len(n) == len(name):
                low = n.lower()
                if low != name:
                    if (b"_" in low or b"_" in name) \
                            and low.replace(b"_", b"-") == name.replace(b"_", b"-"):
                        # WSGI servers (CGI's HTTP_X_TENANT) read X_Tenant as X-Tenant, and
                        # X-Tenant as a route's x_tenant
                        how = "with '-'" if b"_" in low else f"as {key!r}"
                        raise BadHeader(f"the header {n.decode('latin-1')!r} reads as {key!r} "
                                        "to some backends; routing reads that one, so send it "
                                        f"{how}", "header_alias")
                    continue
                if v is not None:
                    raise BadHeader(f"the {key!r} header comes more than once; routing reads "
                                    "it, so send it once", "header_repeated")
                v = value
        if v is None:
            raise KeyError(key)
        if v.isascii():
            return v.decode("ascii")
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise BadHeader(f"the {key!r} header is not valid UTF-8") from None

    def __iter__(self) -> Iterator[str]:
        return iter({n.decode("latin-1").lower(): None for n, _ in self.raw})

    def __len__(self) -> int:
        return len({n.lower() for n, _ in self.raw})
