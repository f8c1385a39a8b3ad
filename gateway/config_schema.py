"""The JSON Schema of the config file, as `killgate schema` prints it for editors.

Owns what the schema says a value is written as, where that differs from the parsed value
pydantic describes: a duration is a string (`'2s'`), so its default is shown as one too
(an editor inserts a field's default on completion: `interval: 2.0`, a bare number, is
refused by `check`).
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.config_types import DURATION_PATTERN

__all__ = ["config_json_schema", "duration_text"]


def duration_text(seconds: float) -> str:
    """Seconds as the config writes them: 3600.0 → '1h', 900.0 → '15m', 2.0 → '2s',
    0.025 → '25ms', 0.0 → '0s'."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{round(seconds * 1000, 6):g}ms"


def _is_duration(schema: dict[str, Any]) -> bool:
    return schema.get("pattern") == DURATION_PATTERN or any(
        isinstance(m, dict) and m.get("pattern") == DURATION_PATTERN
        for m in schema.get("anyOf", ()))


def _durations_as_written(node: Any) -> None:
    if isinstance(node, dict):
        default = node.get("default")
        if (isinstance(default, (int, float)) and not isinstance(default, bool)
                and _is_duration(node)):
            node["default"] = duration_text(float(default))
        for value in node.values():
            _durations_as_written(value)
    elif isinstance(node, list):
        for value in node:
            _durations_as_written(value)


def config_json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema(by_alias=True)
    _durations_as_written(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "killgate config"
    return schema
