"""`killgate diff` exits 2 when the file would change something: a pipeline gates a
deploy on that. argparse exits 2 on any usage error, so a mistyped option read as
"changes"; it is an error (1), and other commands keep argparse's 2."""

from __future__ import annotations

import pytest

from gateway.cli.main import _command
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("argv", [
    ["diff", "a.yaml", "--agianst", "b.yaml"],
    ["diff"],
    ["--admin", "http://127.0.0.1:9", "diff", "a.yaml", "--bogus"],
    ["diff", "a.yaml", "--json", "--timeout", "soon"],
    # argparse takes a top-level option's unambiguous abbreviation: its value is no command
    ["--adm", "http://127.0.0.1:9", "diff", "a.yaml", "--bogus"],
    ["--tim", "5", "diff", "a.yaml", "--bogus"],
])
async def test_a_usage_error_of_diff_exits_1_not_2(argv: list[str]) -> None:
    res = await acli(*argv)
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "usage:" in res.stderr or "error:" in res.stderr, res.stderr


async def test_other_commands_keep_argparses_2() -> None:
    res = await acli("kill", "--reason")
    assert res.returncode == 2, res


def test_the_command_is_found_past_the_options_before_it() -> None:
    assert _command(["--admin", "diff", "check", "x"]) == "check"  # ("diff" is a value)
    assert _command(["--json", "--timeout", "5", "diff", "f"]) == "diff"
    assert _command(["--json"]) is None
    assert _command(["--adm", "diff", "check", "x"]) == "check"
    assert _command(["--admin=u", "diff", "x"]) == "diff"
