"""`killgate --help` and every subcommand's `--help` work: the first thing a new user types.

Subcommands are discovered from the parser itself, so a command added later is covered
without touching this test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys

import pytest

from gateway.cli.main import build_parser, main
from tests import cli_fork
from tests.conftest import ROOT


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((*prefix, name))
                out.extend(_commands(sub, (*prefix, name)))
    return out


COMMANDS = _commands(build_parser())


def test_the_commands_are_discovered() -> None:
    names = {c[0] for c in COMMANDS}
    assert {"serve", "check", "demo", "status", "kill", "unkill", "rollback", "promote",
            "weights", "release", "audit", "diff", "token", "approve", "decline",
            "approvals", "drill"} <= names
    assert {("drill", k) for k in ("kill", "rollback", "failover", "store-loss", "run",
                                   "restore", "history")} <= set(COMMANDS)


def test_top_level_help_as_a_process() -> None:
    res = subprocess.run([sys.executable, "-m", "gateway", "--help"], capture_output=True,
                         text=True, timeout=60, cwd=str(ROOT))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: killgate") and res.stderr == ""
    for (name, *_) in COMMANDS:
        assert name in res.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_subcommand_has_help(command: tuple[str, ...]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0, err.getvalue()
    text = out.getvalue()
    assert text.startswith(f"usage: killgate {' '.join(command)}"), text[:200]
    assert err.getvalue() == ""


def test_audit_verify_has_help() -> None:
    """`audit verify` is a command of its own in CONTRACT §1 (a positional of `audit`)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main(["audit", "verify", "--help"])
    assert exc.value.code == 0
    assert "--mirror" in out.getvalue() and "--key-env" in out.getvalue()


def test_token_help_names_every_scope() -> None:
    from gateway.admin.auth import SCOPES

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["token", "--help"])
    text = " ".join(out.getvalue().split())  # (argparse wraps the help)
    assert [s for s in SCOPES if s not in text] == []


@pytest.mark.parametrize("group", [("drill", "history"), ("shadow", "report", "iris")],
                         ids=" ".join)
@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_client_options_before_between_or_after_a_command(group: tuple[str, ...],
                                                          where: str) -> None:
    """CONTRACT §1: --admin, --token and --json are accepted before or after the
    subcommand, so also between a command group (`drill`, `shadow`) and its command."""
    opts = ["--admin", "http://10.9.8.7:1", "--token", "t0k", "--json"]
    argv = {"before": [*opts, *group], "between": [group[0], *opts, *group[1:]],
            "after": [*group, *opts]}[where]
    args = build_parser().parse_args(argv)
    assert (args.admin, args.token, args.json) == ("http://10.9.8.7:1", "t0k", True)


def test_options_between_drill_and_its_command_are_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import free_port

    port = free_port()  # nothing listens: the error names the address given
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    res = cli_fork.run(["drill", "--admin", f"http://127.0.0.1:{port}", "--json", "history"],
                       dict(os.environ), str(ROOT), 60)
    assert res.returncode == 1, res.stderr
    assert f"cannot reach the admin API at http://127.0.0.1:{port}" in res.stderr


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """`killgate schema | head -1`: the reader closes the pipe before the output ends. The
    command stops like a process killed by SIGPIPE (141), with nothing on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=str(ROOT))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # (long before the interpreter has started and written anything)
    with proc.stderr:
        err = proc.stderr.read().decode()
    rc = proc.wait(timeout=60)
    assert (rc, err) == (141, "")


def test_weights_help_says_versions_not_named_get_zero() -> None:
    """`killgate weights iris v1=70` on the demo silently gave v2 weight 0 (and so made it
    unpinnable, on the drill route too); the help said only 'V=W [V=W ...]'."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["weights", "--help"])
    assert "not named get 0" in " ".join(out.getvalue().split())


@pytest.mark.parametrize("argv", [
    ["status", "--tokn", "TOKEN"],  # a typo of --token
    ["--tokn", "TOKEN", "status"],
    ["TOKEN"],  # the token where the command goes ($KILLGATE_TOKEN pasted alone)
    ["status", "TOKEN"],
    ["kill", "--route", "iris", "--reason", "x", "TOKEN"],
    ["status", "--timeout", "TOKEN"],
    ["drill", "kill", "--route", "iris", "TOKEN"],
])
def test_a_usage_error_never_prints_a_token(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's usage errors quote the words they refuse: a token given with a mistyped
    option (`--tokn`), or left where a command goes, was printed whole on stderr (a CI
    job's log, a shared terminal). The refused words are still named, a token masked."""
    from gateway.admin.tokens import mint

    token = mint("s" * 40, "alice", "killgate:admin", 600, "killgate", "killgate-admin")
    with pytest.raises(SystemExit) as exc:
        main([token if a == "TOKEN" else a for a in argv])
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert token not in out.err and token.split(".")[1] not in out.err, out.err
    assert token[:12] not in out.err and "(a token, not shown)" in out.err, out.err


LEAN_LINES = [["serve", "-c", "k.yaml"], ["serve", "-c", "k.yaml", "--workers", "2"],
              ["serve", "--config=k.yaml", "--worker-index", "1", "--reuse-port"],
              ["serve", "k.yaml"], ["serve", "-c", "k.yaml", "--admin", "http://x"],
              ["serve", "-c", "k.yaml", "--bogus"], ["serve", "-c"], ["serve", "-h"],
              ["serve", "--workers", "two", "-c", "k.yaml"], ["check", "a.yaml", "b.yaml"],
              ["check"], ["check", "-c", "a.yaml"], ["check", "--json", "a.yaml"],
              ["check", "--help"], ["schema"], ["schema", "extra"], ["schema", "--help"]]


def _outcome(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[object, ...]:
    """What parsing `argv` gives: the namespace (the top level's client options aside: the
    lean parser has none, and serve, check and schema read none), or the exit and output."""
    from gateway.cli.main import _parse

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            ns = vars(_parse(parser, argv))
        except SystemExit as exc:
            return ("exit", exc.code, out.getvalue(), err.getvalue())
    return ("args", {k: v for k, v in ns.items()
                     if k not in ("admin", "token", "timeout", "json")})


@pytest.mark.parametrize("argv", LEAN_LINES, ids=" ".join)
def test_serve_check_and_schema_parse_the_same_without_the_client_commands(
        argv: list[str]) -> None:
    """`killgate serve|check|schema ...` builds only its own parser (each serve worker's
    start, each check, imported the client commands for nothing: cli/main.LEAN): every
    such command line, right or wrong, gives what the whole parser gives."""
    from gateway.cli.main import LEAN

    assert argv[0] in LEAN
    assert _outcome(build_parser(argv[0]), argv) == _outcome(build_parser(), argv)
