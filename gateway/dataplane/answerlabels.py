"""The x-killgate-* lines of answers, by (route, version, decision), and the last found
(`Labels`: `answers.Answers.labels` fills it, `finish.Finish.write_complete` reads it). No
I/O."""

from __future__ import annotations

__all__ = ["Labels"]


class Labels:
    """The x-killgate-* lines of answers by (route, version, decision), and the last found:
    most answers have the same route, version and decision objects as the one before, and
    `is` finds their lines without a key built, hashed and compared (~450 CPU instructions
    an answer; `Finish.write_complete`)."""

    __slots__ = ("by", "decision", "lines", "route", "version")

    def __init__(self) -> None:
        self.by: dict[tuple[str, str, str], bytes] = {}
        self.route = self.version = self.decision = ""
        self.lines = b""  # (of no answer: no route is named "")
