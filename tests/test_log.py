"""The log formats (gateway/log.py): what a client's bytes can and cannot do to a line."""

from __future__ import annotations

import json
import logging
import sys

from gateway.log import _JsonFormatter, _TextFormatter


def _record_with_traceback(message: str) -> logging.LogRecord:
    try:
        raise ValueError(message)
    except ValueError:
        return logging.LogRecord("killgate.proxy", logging.ERROR, __file__, 1, "request_failed",
                                 None, sys.exc_info())


HOSTILE = ("bad target /x\n12:00:00 info    killgate.state: state_applied generation=9 "
           "kills=[]\r\x1b[2J\x1b[31mred\x07\x00")


def test_text_a_traceback_cannot_start_a_line_or_carry_terminal_controls() -> None:
    out = _TextFormatter().format(_record_with_traceback(HOSTILE))
    first, *rest = out.split("\n")
    assert "request_failed" in first
    assert rest and all(ln.startswith("  ") for ln in rest), rest
    assert not any(c in out for c in "\r\x1b\x07\x00"), repr(out)
    assert "\\x1b[31mred" in out  # (escaped, still readable)


def test_json_a_traceback_stays_in_one_valid_line() -> None:
    out = _JsonFormatter().format(_record_with_traceback(HOSTILE))
    assert "\n" not in out and "\x1b" not in out
    assert "state_applied" in json.loads(out)["exc"]
