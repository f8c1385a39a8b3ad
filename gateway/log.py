"""Structured logging: one line per event, JSON or text, never a secret (fields pass
through gateway/redact.py: URL userinfo, secret-named values, webhook paths; the messages
of other libraries' records and every traceback pass through `redact.message`).

Owns the log format. Call `event(logger, "name", key=value, ...)`; the fields land as
JSON keys (format json) or `key=value` pairs (format text). Strings are escaped so a
value can never start a new line (no log injection).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from gateway import redact

__all__ = ["configure", "event"]

_FIELDS = "kg_fields"
# Loggers of other libraries whose message arguments are secrets whole: the OpenTelemetry
# SDK's parser of OTEL_EXPORTER_OTLP_HEADERS warns about a malformed entry quoting it,
# value included (`x-honeycomb-team: <key>`, the colon a common slip)
_SECRET_ARGS = frozenset({"opentelemetry.util.re"})
_ENTRY_NAME = re.compile(r"\s*[^:=\s]*[ \t]*[:=]?[ \t]*")


def _name_only(arg: object) -> str:
    """A `name: value` / `name=value` entry as its name and `***`."""
    m = _ENTRY_NAME.match(str(arg))
    return (m.group(0) if m is not None else "") + redact.MASK


def _message(record: logging.LogRecord) -> str:
    """The record's message: an event's name as it is (ours, a constant); another
    library's text (the OTLP exporter's, urllib3's, aiohttp's, which echo URLs, header
    lines and request bytes) redacted."""
    if hasattr(record, _FIELDS):
        return record.getMessage()
    if record.name in _SECRET_ARGS and record.args:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        try:
            return str(record.msg) % tuple(_name_only(a) for a in args)
        except (TypeError, ValueError):
            return f"{record.msg} ({redact.MASK})"
    return redact.message(record.getMessage())


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    return redact.message(formatter.formatException(record.exc_info))  # type: ignore[arg-type]


# C0 controls but the newline, DEL and C1 controls (U+009B is a one-character CSI) as
# escapes (a plain str.translate: no codec)
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), *range(0x7F, 0xA0)) if c != 10}


def _indented(text: str) -> str:
    """A traceback under a text line: every line indented, control characters escaped, so
    that what an exception's message carries (a client's bytes, say) can neither start a
    line that reads as a record of its own nor move a terminal's cursor or colours."""
    return "\n".join("  " + ln for ln in text.translate(_CONTROLS).split("\n"))

# C0 controls, DEL and C1 controls written as \xNN (\n, \r, \t by name): a message can
# never start a line of its own, move the cursor or colour a terminal. A table, not the
# unicode_escape codec: the codec is looked up per call, and at interpreter shutdown the
# lookup itself can fail (LookupError) for the last lines logged.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})
# and what else reads as a line's end (str.splitlines: U+2028, U+2029) or reorders what a
# terminal shows (bidi controls: a line that reads other than what it holds)
_UNICODE = (0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_ESCAPES.update({c: f"\\u{c:04x}" for c in _UNICODE})
_CONTROLS.update({c: f"\\u{c:04x}" for c in _UNICODE})


def event(logger: logging.Logger, name: str, level: int = logging.INFO, *,
          exc: BaseException | None = None, **fields: Any) -> None:
    """One structured line; `exc` adds its traceback (for failures nobody expected)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, exc_info=exc, extra={_FIELDS: fields})


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _message(record),
        }
        out.update(redact.tree(getattr(record, _FIELDS, {})))
        if record.exc_info:
            out["exc"] = _exception(self, record)
        return json.dumps(out, default=str, ensure_ascii=True)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = redact.tree(getattr(record, _FIELDS, {}))
        kv = " ".join(f"{k}={json.dumps(v, default=str, ensure_ascii=True)}" for k, v in fields.items())
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{ts} {record.levelname.lower():7s} {record.name}: {_message(record)}"
        line = line.translate(_ESCAPES)  # (the newline too: a traceback goes below, indented)
        if kv:
            line += " " + kv
        if record.exc_info:
            line += "\n" + _indented(_exception(self, record))
        return line


def configure(fmt: str = "text", level: str = "info") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access logger is replaced by ours; its server errors stay visible.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # watchfiles says "N changes detected" at INFO for any file in the config's folder;
    # ours is the event that matters (config_reloaded / config_rejected).
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
