"""The admin client's one exception: a failed command, its message and exit code."""

from __future__ import annotations

__all__ = ["ClientError"]


class ClientError(Exception):
    """A failed command: the message is printed and the exit code is `code`."""

    def __init__(self, message: str, code: int = 1, status: int | None = None,
                 kind: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status  # the admin API's HTTP status, when it answered with an error
        self.kind = kind  # and its error type (`not_killed`, `not_durable`, ...)
