"""The noise floor excuses a shadow's difference by its path: a primary whose scores vary
from call to call must not excuse a shadow that changes a tensor's form. (Hostile shadow
review: a shape, datatype or missing output sat at the same path as the values,
`outputs[probs]`, so with a jittery primary a shadow answering another shape, another
datatype or no output at all counted as agreeing, and could open the promotion gate.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config_shadow import ShadowConfig
from gateway.domain.compare import AGREED, DISAGREED, NOISE
from gateway.domain.comparison import Answer
from gateway.domain.verdict import verdict

pytestmark = pytest.mark.timeout(10)

SH = ShadowConfig.model_validate({"version": "v2", "sample": 1.0, "noise": {"sample": 1.0}})


def v2(data: list[Any], shape: tuple[int, ...] = (1, 3), dtype: str = "FP32",
       outputs: bool = True) -> Answer:
    out = [{"name": "probs", "shape": list(shape), "datatype": dtype, "data": data}]
    return Answer(200, json.dumps({"outputs": out if outputs else []}).encode(),
                  "application/json")


PRIMARY = v2([0.1, 0.2, 0.7])
AGAIN = v2([0.1, 0.2, 0.70001])  # the primary jitters on its own scores


@pytest.mark.parametrize("shadow, kind", [
    (v2([0.1, 0.2, 0.7, 0.0], (1, 4)), "shape"),
    (v2([0.1, 0.2, 0.7], dtype="FP64"), "datatype"),
    (v2([], outputs=False), "missing_output"),
    (v2(["a", "b", "c"]), "unparsable"),
])
def test_a_jittery_primary_does_not_excuse_a_change_of_the_tensors_form(
        shadow: Answer, kind: str) -> None:
    v = verdict(SH, "v2", b"{}", PRIMARY, shadow, AGAIN, frozenset())
    assert v.outcome == DISAGREED and [d.kind for d in v.left] == [kind], v
    # nor does a path learned to be noise from earlier pairs (requests without their own)
    noisy = frozenset(d.path for d in v.noise.differences) if v.noise else frozenset()
    assert noisy
    v = verdict(SH, "v2", b"{}", PRIMARY, shadow, None, noisy)
    assert v.outcome == DISAGREED and [d.kind for d in v.left] == [kind], v


def test_values_that_vary_as_the_primarys_do_are_still_noise() -> None:
    v = verdict(SH, "v2", b"{}", PRIMARY, v2([0.1, 0.2, 0.70002]), AGAIN, frozenset())
    assert v.outcome == NOISE and [d.path for d in v.result.differences] == [
        "outputs[probs].data"]
    assert verdict(SH, "v2", b"{}", PRIMARY, PRIMARY, AGAIN, frozenset()).outcome == AGREED
