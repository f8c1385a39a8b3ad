"""The admin API's body decoder (inputs._loads, made once) answers as
`json.loads(text, parse_constant=..., object_pairs_hook=...)` did, value or error, word for word: the bodies
test_admin_hostile_input sends through a real admin listener, and random text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admin.inputs import _loads, _no_constant, _unique

pytestmark = pytest.mark.timeout(30)

HOSTILE = ['{"a":1}', '\ufeff{"a":1}', '\ufeff\ufeff{}', '{"a":NaN}', '{"a":-Infinity}',
           '[1,2', '{"a":1} x', "1" * 5000, '{"a":"\\ud800"}', "", "  ", '{"a":1,}',
           "[" * 3000 + "]" * 3000, '{"a":1e999}', '"\x00"', "{\"a\":\"b\"}\n",
           '{"a":1,"a":2}', '{"w":{"v1":50,"v1":60}}', '[{"k":1},{"k":1,"k":1}]']


def _answer(fn: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", fn(text)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


def _before(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique)


@pytest.mark.parametrize("text", HOSTILE)
def test_the_same_value_or_the_same_error(text: str) -> None:
    assert _answer(_loads, text) == _answer(_before, text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]":,.-+0123456789eEaNInfityrulsn \ufeff\\u', max_size=40))
def test_the_same_on_random_text(text: str) -> None:
    assert _answer(_loads, text) == _answer(_before, text)
