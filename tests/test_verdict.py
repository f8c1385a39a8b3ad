"""One copy's verdict (domain/verdict.py): compare, the noise floor, disagreement records,
the settings digest. Pure: no loop."""

from __future__ import annotations

import json

from gateway.config_shadow import DisagreementsConfig, ShadowConfig
from gateway.domain.comparison import Answer
from gateway.domain.verdict import body_record, spec_of, verdict


def chat(text: str, finish: str = "stop") -> Answer:
    return Answer(200, json.dumps({"choices": [{"index": 0, "message": {"content": text},
                                                "finish_reason": finish}]}).encode())


def test_verdict_outcomes_and_records() -> None:
    sh = ShadowConfig.model_validate({"version": "v2", "disagreements": {"redact": ["q"]}})
    req = b'{"q": "secret", "model": "m"}'
    v = verdict(sh, "openai", req, chat("a"), chat("a"), None, frozenset())
    assert (v.outcome, v.left, v.record, v.noise) == ("agreed", (), None, None)
    v = verdict(sh, "openai", req, chat("a"), chat("b", "length"), None, frozenset())
    assert v.outcome == "disagreed" and v.record is not None
    assert v.record["request"] == {"q": "[redacted]", "model": "m"}
    assert [d["kind"] for d in v.record["differences"]] == ["text", "finish_reason"]
    assert v.record["detail"]["exact"] is False
    # the primary's second answer differs in its text too: only finish_reason is left
    v = verdict(sh, "openai", req, chat("a"), chat("b", "length"), chat("c"), frozenset())
    assert v.outcome == "disagreed" and [d.kind for d in v.left] == ["finish_reason"]
    assert v.noise is not None and [d.path for d in v.noise.differences] == ["choices[0].text"]
    v = verdict(sh, "openai", req, chat("a"), chat("b"), None, frozenset({"choices[0].text"}))
    assert (v.outcome, v.record) == ("noise", None)
    none = ShadowConfig.model_validate({"version": "v2", "disagreements": {"keep": 0}})
    assert verdict(none, "openai", req, chat("a"), chat("b"), None, frozenset()).record is None


def test_spec_digest_follows_what_the_counts_depend_on() -> None:
    base = ShadowConfig.model_validate({"version": "v2", "sample": 0.1})
    same = ShadowConfig.model_validate({"version": "v2", "sample": 1.0, "max_inflight": 9})
    other = ShadowConfig.model_validate({"version": "v2", "compare": "json"})
    noisy = ShadowConfig.model_validate({"version": "v2", "noise": {}})
    assert spec_of(base, "v2") == spec_of(same, "v2")
    assert len({spec_of(base, "v2"), spec_of(other, "v2"), spec_of(noisy, "v2"),
                spec_of(base, "openai")}) == 4


def test_body_records_redact_and_cut() -> None:
    cfg = DisagreementsConfig(max_body=100, redact=["messages[*].content", "user"])
    body = json.dumps({"messages": [{"role": "user", "content": "card 4111 1111"}],
                       "user": "bob@example.com", "model": "m"}).encode()
    assert body_record(body, cfg) == {"messages": [{"role": "user", "content": "[redacted]"}],
                                      "user": "[redacted]", "model": "m"}
    long = json.dumps({"model": "m", "prompt": "x" * 200}).encode()
    cut = body_record(long, cfg)
    assert isinstance(cut, str) and cut.startswith('{"model":"m"') and "…[cut " in cut
    # not JSON: kept as text when nothing is to be redacted, else not kept at all
    assert body_record(b"plain text", DisagreementsConfig()) == "plain text"
    assert "not kept" in body_record(b"card 4111", cfg)
    huge = json.dumps({"prompt": "y" * 300_000}).encode()  # not parsed for a record
    assert "not kept" in body_record(huge, cfg)
    assert body_record(huge, DisagreementsConfig(max_body=10)) == huge[:10].decode() + \
        f"…[cut {len(huge) - 10} bytes]"
    assert body_record(b"\xff\xfe" * 10, DisagreementsConfig(max_body=4)) == \
        "\ufffd\ufffd\ufffd\ufffd…[cut 16 bytes]"


