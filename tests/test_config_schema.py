"""`killgate schema` is what the README tells a new user to point an editor's YAML plugin
at. It said every duration was a number (pydantic described the parsed seconds), so each
`interval: 2s` of the shipped examples was marked wrong (23 marks on config/killgate.yaml),
and a duration's completion inserted `2.0`, which `check` refuses; `retry_on: [reset, 503]`
was marked wrong too (the schema took only the string "503"). Found by following the README
as a new user: the shipped configs are validated against the printed schema here, with a
real JSON Schema validator."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.config_schema import duration_text
from gateway.config_types import parse_duration
from tests import cli_fork

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    res = cli_fork.run(["schema"], dict(os.environ), str(ROOT), 30)
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def _shipped() -> list[tuple[str, Any]]:
    docs = [(p.name, yaml.safe_load(p.read_text())) for p in sorted((ROOT / "config").glob(
        "*.yaml"))]
    for cm in sorted((ROOT / "deploy" / "kubernetes").rglob("configmap.yaml")):
        data = yaml.safe_load(cm.read_text())["data"]["config.yaml"]
        docs.append((str(cm.relative_to(ROOT)), yaml.safe_load(data)))
    return docs


def test_every_shipped_config_is_valid_under_the_schema(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    shipped = _shipped()
    assert len(shipped) >= 5
    for name, doc in shipped:
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
                  for e in validator.iter_errors(doc)]
        assert not errors, (name, errors)


@pytest.mark.parametrize("bad", [
    {"server": {"drain_timeout": 30}},                       # a bare number: no unit
    {"server": {"drain_timout": "30s"}},                     # a typo
    {"routes": [{"name": "r", "match": {"path_prefix": "/r"}, "stable": "v1",
                 "versions": [{"name": "v1", "url": "http://h:1", "weight": 1}],
                 "retry": {"retry_on": [500]}}]},            # not a status it retries on
])
def test_the_schema_still_refuses_what_check_refuses(schema: dict[str, Any],
                                                     bad: dict[str, Any]) -> None:
    doc = {"routes": [{"name": "r", "match": {"path_prefix": "/r"}, "stable": "v1",
                       "versions": [{"name": "v1", "url": "http://h:1", "weight": 1}]}]}
    doc.update(bad)
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(doc))


def _defaults(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "default" in node and path.split("/")[-2:-1] == ["properties"]:
            found.append((path, node))
        for key, value in node.items():
            found += _defaults(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _defaults(value, f"{path}/{i}")
    return found


def test_every_default_is_what_the_file_may_say(schema: dict[str, Any]) -> None:
    """An editor inserts a field's default on completion: it must be valid there."""
    defaults = _defaults(schema)
    assert len(defaults) > 100
    durations = 0
    for path, prop in defaults:
        if prop["default"] is None:
            continue
        sub = {"$defs": schema["$defs"], **{k: v for k, v in prop.items() if k != "default"}}
        errors = [e.message for e in
                  jsonschema.Draft202012Validator(sub).iter_errors(prop["default"])]
        assert not errors, (path, prop["default"], errors)
        if "ms|s|m|h" in json.dumps(prop):
            durations += 1
            assert isinstance(prop["default"], str), path
    assert durations > 40


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0s"), (0.025, "25ms"), (0.5, "500ms"), (1.5, "1500ms"), (2.0, "2s"), (90.0, "90s"),
    (900.0, "15m"), (3600.0, "1h"), (604800.0, "168h")])
def test_a_duration_is_shown_as_written(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
    assert parse_duration(text) == seconds


def _route(**extra: Any) -> dict[str, Any]:
    return {"routes": [{"name": "r", "match": {"path_prefix": "/r"}, "stable": "v1",
                        "versions": [{"name": "v1", "url": "http://h:1", "weight": 1},
                                     {"name": "v2", "url": "http://h:2", "weight": 0}],
                        **extra}]}


@pytest.mark.parametrize(("doc", "valid"), [
    (_route(shadow={"version": "v2", "compare": "json"}), True),  # (short for {json: {}})
    (_route(shadow={"version": "v2", "compare": {"json": None}}), True),
    (_route(shadow={"version": "v2", "compare": "jsn"}), False),
    (_route(shadow={"version": "v2", "compare": {"json": {
        "answer_paths": ["choices[*].message.content", "$.text"]}}}), True),
    (_route(shadow={"version": "v2", "compare": {"json": {"answer_paths": ["a..b"]}}}), False),
    (_route(shadow={"version": "v2", "compare": {"json": {"ignore": ["$"]}}}), False),
    (_route(retry={"retry_on": ["reset", 503, "502"]}), True),
    (_route(retry={"retry_on": [500]}), False),
    (_route(health={"path": "/h", "interval": "2s"}), True),
    (_route(health={"path": "/h", "interval": 2}), False),
])
def test_the_schema_and_check_agree(schema: dict[str, Any], doc: dict[str, Any],
                                    valid: bool) -> None:
    from pydantic import ValidationError

    from gateway.config import Config

    in_schema = not list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    try:
        Config.model_validate(doc)
        checked = True
    except ValidationError:
        checked = False
    assert (in_schema, checked) == (valid, valid)
