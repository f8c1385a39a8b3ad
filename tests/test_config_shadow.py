"""The shadow config (config_shadow.py): defaults, the compare shorthand, checks."""

from __future__ import annotations

import json

import pytest

from gateway.configfile import parse_config_text
from gateway.errors import ConfigError

ROUTE = """
routes:
  - name: iris
    match: {{path_prefix: /v2/models/iris}}
    stable: v1
    protocol: {protocol}
    shadow: {shadow}
    versions:
      - {{name: v1, url: "http://127.0.0.1:9101", weight: 100}}
      - {{name: v2, url: "http://127.0.0.1:9102", weight: 0}}
"""


def load(shadow: str, protocol: str = "http"):  # type: ignore[no-untyped-def]
    return parse_config_text(ROUTE.format(shadow=shadow, protocol=protocol)).routes[0]


def test_defaults_and_compare_by_protocol() -> None:
    rc = load("{version: v2}", "v2")
    sh = rc.shadow
    assert sh is not None
    assert (sh.sample, sh.max_inflight, sh.max_request_bytes, sh.noise) == (0.1, 32, 65536, None)
    assert sh.compare_for("v2").kind == "v2_tensors"
    assert sh.compare_for("openai").kind == "openai_chat"
    assert sh.compare_for("http").kind == "json"
    assert sh.timeouts.total == 30.0 and sh.disagreements.keep == 20


def test_compare_shorthand_and_options() -> None:
    sh = load("{version: v2, compare: openai_chat}").shadow
    assert sh is not None and sh.compare is not None and sh.compare.kind == "openai_chat"
    sh = load("{version: v2, compare: {v2_tensors: {atol: 0.001, argmax: true}}}").shadow
    assert sh is not None and sh.compare is not None and sh.compare.v2_tensors is not None
    assert sh.compare.v2_tensors.atol == 0.001 and sh.compare.v2_tensors.argmax
    sh = load("{version: v2, compare: {json: }, noise: {sample: 0.5}}").shadow
    assert sh is not None and sh.compare is not None and sh.compare.kind == "json"
    assert sh.noise is not None and sh.noise.sample == 0.5


@pytest.mark.parametrize("shadow, says", [
    ("{version: v2, sample: .nan}", "routes[0].shadow.sample: must be"),
    ("{version: v2, compare: {v2_tensors: {atol: .inf}}}",
     "routes[0].shadow.compare.v2_tensors.atol: must be a finite number"),
    ("{version: v2, compare: {openai_chat: {text: fuzzy}}}",
     "routes[0].shadow.compare.openai_chat.text: must be one of"),
    ("{version: v2, compare: {}}", "routes[0].shadow.compare: name exactly one of"),
    ("{version: v2, compare: 3}", "routes[0].shadow.compare: must be a mapping"),
    ("{version: v2, max_inflight: 0}", "routes[0].shadow.max_inflight: must be >= 1"),
    ("{version: v2, timeouts: {total: 0s}}", "routes[0].shadow.timeouts.total: must be > 0"),
    ("{version: v2, disagreements: {redact: ['a[']}}",
     "routes[0].shadow.disagreements.redact: 'a[' is not a JSON path"),
    ("{version: v2, noise: {threshold: 0}}", "routes[0].shadow.noise.threshold: must be > 0"),
    ("{version: v2, smaple: 0.5}", "routes[0].shadow.smaple: unknown key (did you mean "
                                    "'sample'?)"),
    ("{sample: 0.5}", "routes[0].shadow.version: required"),
])
def test_bad_shadow_settings_name_their_path(shadow: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(shadow)
    assert any(says in str(p) for p in err.value.problems), err.value.problems


def test_min_shadow_agreement_with_a_shadow_is_accepted() -> None:
    text = ROUTE.format(shadow="{version: v2}", protocol="v2") + \
        "    analysis: {min_shadow_agreement: 0.9, min_shadow_compared: 50}\n"
    rc = parse_config_text(text).routes[0]
    assert rc.analysis is not None and rc.analysis.min_shadow_agreement == 0.9


@pytest.mark.parametrize(("shadow", "says"), [
    ("{version: v2, compare: {json: {answer_paths: ['a..b']}}}", "is not a JSON path"),
    ("{version: v2, compare: {json: {answer_paths: ['$']}}}", "names the whole answer"),
    ("{version: v2, compare: {json: {answer_paths: [content], ignore: [content]}}}",
     "also in ignore"),
    ("{version: v2, compare: {openai_chat: {answer_paths: [content]}}}", "answer_paths"),
])
def test_bad_answer_paths_are_refused(shadow: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(shadow)
    assert any(says in str(p) for p in err.value.problems), err.value.problems


def test_answer_paths_mark_the_answer_and_the_default_takes_a_long_text() -> None:
    """`compare: json`: a difference in the answer is of kind `answer` (compare.ANSWER_KINDS:
    excused as noise, it is no agreement for the gate); an id, a UUID, a timestamp is not."""
    from gateway.config_shadow import JsonCompare
    from gateway.domain.compare_json import compare_json

    def kinds(cfg: dict[str, object], a: object, b: object) -> dict[str, str]:
        c = compare_json(JsonCompare.model_validate(cfg), json.dumps(a).encode(),
                         json.dumps(b).encode())
        return {d.path: d.kind for d in c.differences}

    text = "Answer number 3: the capital is Paris."
    a = {"id": "chatcmpl-0.123", "uuid": "0b5f1c1e-6c7a-4bb3-9b1e-6a9e7b0b1c2d",
         "at": "2026-12-06 02:18:51.123456+00:00", "short": "Paris",
         "choices": [{"message": {"content": text}}]}
    b = {"id": "chatcmpl-0.456", "uuid": "1b5f1c1e-6c7a-4bb3-9b1e-6a9e7b0b1c2d",
         "at": "2026-12-06 02:18:52.123456+00:00", "short": "Lyon",
         "choices": [{"message": {"content": "qxz kvj " * 5}}]}
    plain = {"id": "value", "uuid": "value", "at": "value", "short": "value"}
    assert kinds({}, a, b) == {**plain, "choices[0].message.content": "answer"}
    assert kinds({"answer_paths": ["short", "choices[*].message.content"]}, a, b) == {
        **plain, "short": "answer", "choices[0].message.content": "answer"}
    assert kinds({"answer_paths": []}, a, b) == {**plain, "choices[0].message.content": "value"}
    assert kinds({}, {"c": text}, {"c": None}) == {"c": "answer"}  # (a type change too)
