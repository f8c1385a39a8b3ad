"""What a config change would change (domain/diff.py): route settings a review must see."""

from __future__ import annotations

from gateway.configfile import parse_config_text
from gateway.domain.diff import config_dict, diff_configs, diff_rows
from tests.test_config_shadow import ROUTE  # one shadowed route, protocol and shadow to fill


def test_shadow_and_protocol_changes_are_listed() -> None:
    old = config_dict(parse_config_text(ROUTE.format(protocol="v2",
                                                     shadow="{version: v2, sample: 0.1}")))
    new = config_dict(parse_config_text(ROUTE.format(protocol="http",
                                                     shadow="{version: v2, sample: 1.0}")))
    d = diff_configs(old, new)
    settings = d["routes"]["iris"]["settings"]
    assert settings["protocol"] == ["v2", "http"]
    assert settings["shadow"][0]["sample"] == 0.1 and settings["shadow"][1]["sample"] == 1.0
    assert [r[1] for r in diff_rows(d)] == ["protocol", "shadow.sample"]
    assert diff_configs(old, old) == {"routes": {}, "settings": {}}


def test_a_nested_change_is_shown_where_it_is() -> None:
    """The table cut a changed setting's value at 60 characters: a shadow whose compare
    tolerance went from 1e-6 to 1.0 (nearly every answer agrees: the promotion gate opens)
    showed the same text before and after (hostile shadow review)."""
    def cfg(atol: str, sample: str = "0.1") -> dict:
        return config_dict(parse_config_text(ROUTE.format(
            protocol="v2", shadow=f"{{version: v2, sample: {sample}, "
                                  f"compare: {{v2_tensors: {{atol: {atol}}}}}}}")))

    rows = diff_rows(diff_configs(cfg("1.0e-6"), cfg("1.0", "0.5")))
    assert [r[1:] for r in rows] == [["shadow.sample", "0.1", "0.5"],
                                     ["shadow.compare.v2_tensors.atol", "1e-06", "1"]]
