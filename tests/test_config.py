"""Config loading: every example accepted, every broken fixture refused by its YAML path."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gateway.config import parse_duration, parse_listen
from gateway.configfile import load_config, parse_config_text
from gateway.errors import ConfigError
from tests import cli_fork

ROOT = Path(__file__).resolve().parent.parent
INVALID = sorted((ROOT / "tests/data/config/invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0] if path.read_text() else ""
    assert first.startswith("# expect: "), f"{path.name} needs a '# expect: ' first line"
    return first.removeprefix("# expect: ")


def test_enough_distinct_broken_fixtures() -> None:
    assert len(INVALID) >= 15
    assert len({_expected(p) for p in INVALID}) == len(INVALID)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    loaded = load_config(path)
    assert loaded.digest.startswith("sha256:")


# every config file the project ships or promises: config/, and the contract's own examples
SHIPPED = [*EXAMPLES, *sorted((ROOT / "tests/data/config/valid").glob("*.yaml"))]
KEYS = {"KILLGATE_JWT_SECRET": "j" * 40, "KILLGATE_STATE_KEY": "s" * 40,
        "KILLGATE_AUDIT_KEY": "a" * 40, "KILLGATE_EVENTS_SECRET": "e" * 40}


def _check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in KEYS}
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    return cli_fork.run(["check", str(path)], {**e, **env}, str(ROOT), 30)


def test_every_shipped_config_is_covered() -> None:
    assert {p.name for p in EXAMPLES} >= {"minimal.yaml", "killgate.yaml", "openai.yaml"}
    assert {p.name for p in SHIPPED} >= {"contract.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_pass_killgate_check(path: Path) -> None:
    """`killgate check` itself (not only the loader: it also loads the admin key and checks
    the state keys) accepts every shipped config: silently with the secrets a deployment
    sets, and with notes only (exit 0) before they are set."""
    res = _check(path, KEYS)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    assert res.stdout.startswith(f"{path}: ok (") and "sha256:" in res.stdout
    res = _check(path, {})
    assert res.returncode == 0, res.stderr
    assert all(line.startswith("note: ") for line in res.stderr.splitlines()), res.stderr


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture_is_refused_with_its_message(path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    messages = [str(p) for p in err.value.problems]
    assert any(_expected(path) in m for m in messages), messages


def test_check_cli_exit_codes_and_one_line_per_problem(tmp_path: Path) -> None:
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    ok = cli_fork.run(["check", str(EXAMPLES[0])], dict(os.environ), os.getcwd(), 30)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listen: 0.0.0.0:8080\nadmin: {listen: 127.0.0.1:8081, lisen: x}\nroutes:\n"
        "  - name: r\n    match: {path_prefix: /r}\n    stable: v1\n    versions:\n"
        "      - {name: v1, url: 'http://127.0.0.1:1', weight: -1}\n")
    res = cli_fork.run(["check", str(bad)], dict(os.environ), os.getcwd(), 30)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert "routes[0].versions[0].weight: must be >= 0" in lines
    assert "admin.lisen: unknown key (did you mean 'listen'?)" in lines


def test_check_notes_a_promotion_gate_that_weights_walks_around(tmp_path: Path) -> None:
    """(console and auth review) approvals.promote 2 with weights 1: a `weights` call giving
    the canary 100 % is a promotion with one principal. `check` says so (exit 0)."""
    cfg = tmp_path / "gated.yaml"
    base = (ROOT / "config/minimal.yaml").read_text()
    cfg.write_text(base + "approvals: {promote: 2}\n")
    res = _check(cfg, KEYS)
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("note: approvals.promote is 2 but approvals.weights is 1"), \
        res.stderr
    cfg.write_text(base + "approvals: {promote: 2, weights: 2}\n")
    res = _check(cfg, KEYS)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr


def test_check_notes_a_shadow_that_steps_roll_out_ungated(tmp_path: Path) -> None:
    """(shadow review) With `analysis.steps`, a route's shadow is its canary: without
    `min_shadow_agreement`, progressive delivery gave it live traffic at once, before any
    comparison. `check` says so (exit 0); with the gate, nothing."""
    routes = """\
routes:
  - name: chat
    match: {path_prefix: /v1/chat}
    stable: a
    versions:
      - {name: a, url: "http://127.0.0.1:9101", weight: 100}
      - {name: b, url: "http://127.0.0.1:9102", weight: 0}
    shadow: {version: b, sample: 0.5}
    analysis: {steps: [10, 50, 100]%s}
"""
    cfg = tmp_path / "ungated.yaml"
    cfg.write_text("listen: 0.0.0.0:8080\n" + routes % "")
    res = _check(cfg, KEYS)
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("note: routes[0] (chat): analysis.steps with shadow 'b' and "
                                 "no analysis.min_shadow_agreement"), res.stderr
    cfg.write_text("listen: 0.0.0.0:8080\n" + routes % ", min_shadow_agreement: 0.9")
    res = _check(cfg, KEYS)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr


@pytest.mark.parametrize("auth, env, code, says", [
    ("hs256_secret_file: short.txt", {}, 1, "shorter than 32 bytes"),
    ("hs256_secret_file: missing.txt", {}, 1, "missing.txt"),
    ("{algorithms: [RS256], public_key_file: private.pem}", {}, 1, "holds a private key"),
    ("hs256_secret_env: KG_CHECK_SECRET", {"KG_CHECK_SECRET": "short"}, 1, "shorter than 32"),
    ("hs256_secret_env: KG_CHECK_SECRET", {}, 0, "note: admin.auth: no admin token secret"),
    ("hs256_secret_file: long.txt", {}, 0, ""),
    ("hs256_secret_file: open.txt", {}, 1, "may be read or written by other users (mode 0644)"),
    ("hs256_secret_file: groupw.txt", {}, 1, "may be written by other users (mode 0620)"),
    ("{algorithms: [RS256], public_key_file: open.pem}", {}, 1, "(mode 0666); `chmod go-w`"),
], ids=["short-file", "missing-file", "private-key", "short-env", "unset-env", "good-file",
        "world-readable-secret", "group-writable-secret", "world-writable-public-key"])
def test_check_refuses_admin_keys_that_cannot_verify(tmp_path: Path, auth: str,
                                                     env: dict[str, str], code: int,
                                                     says: str) -> None:
    """RELIABILITY row 23: a key file that is missing, short or private is an error; an
    unset secret variable is the deployment's business, so only a note."""
    (tmp_path / "short.txt").write_text("ten bytes!")
    (tmp_path / "short.txt").chmod(0o600)
    (tmp_path / "long.txt").write_text("x" * 40)
    (tmp_path / "long.txt").chmod(0o600)
    (tmp_path / "open.txt").write_text("x" * 40)
    (tmp_path / "open.txt").chmod(0o644)
    (tmp_path / "groupw.txt").write_text("x" * 40)
    (tmp_path / "groupw.txt").chmod(0o620)
    (tmp_path / "open.pem").write_text("-----BEGIN PUBLIC KEY-----\nabc\n")
    (tmp_path / "open.pem").chmod(0o666)
    (tmp_path / "private.pem").write_text("-----BEGIN PRIVATE KEY-----\nabc\n")
    cfg = tmp_path / "k.yaml"
    cfg.write_text(f"admin:\n  auth: {auth}\n" if auth.startswith("{") else
                   f"admin:\n  auth:\n    {auth}\n")
    cfg.write_text(cfg.read_text() + "routes:\n  - name: r\n    match: {path_prefix: /r}\n"
                   "    stable: v1\n    versions:\n"
                   "      - {name: v1, url: 'http://127.0.0.1:1', weight: 100}\n")
    e = {k: v for k, v in os.environ.items() if k != "KG_CHECK_SECRET"}
    res = cli_fork.run(["check", str(cfg)], {**e, **env}, str(ROOT), 30)
    assert res.returncode == code, res.stderr
    assert says in res.stderr


def test_schema_command_prints_json_schema() -> None:
    res = cli_fork.run(["schema"], dict(os.environ), os.getcwd(), 30)
    schema = json.loads(res.stdout)
    assert "routes" in schema["properties"]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("2s", 2.0), ("1m", 60.0),
                                               ("1.5h", 5400.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5", "2 sec", "-1s", "", "1d"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_listen_forms() -> None:
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    with pytest.raises(ValueError):
        parse_listen("[nothex]:80")


@pytest.mark.parametrize("value", ["null", "8080", "[a]", "{h: x}"])
def test_listen_of_another_type_is_a_config_error(value: str) -> None:
    """Found by tests/test_properties.py: `listen: null` used to raise AttributeError."""
    base = EXAMPLES[0].read_text()
    text = "\n".join(f"listen: {value}" if line.startswith("listen:") else line
                     for line in base.splitlines())
    with pytest.raises(ConfigError) as err:
        parse_config_text(text)
    assert any(p.path == "listen" and "host:port" in p.message for p in err.value.problems), \
        err.value.problems


def test_defaults_are_documented_values() -> None:
    cfg = parse_config_text(
        "routes:\n  - name: r\n    match: {path_prefix: /r}\n    stable: v1\n    versions:\n"
        "      - {name: v1, url: 'http://127.0.0.1:1/base/'}\n")
    assert cfg.listen == "0.0.0.0:8080"
    assert cfg.admin.listen == "127.0.0.1:8081"
    assert cfg.state.backend == "local"
    assert cfg.state.poll_interval == 0.25
    assert cfg.routes[0].versions[0].url == "http://127.0.0.1:1/base"
    assert cfg.routes[0].timeouts.connect == 1.0


def test_models_are_frozen() -> None:
    cfg = load_config(EXAMPLES[0]).config
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        cfg.routes[0].versions[0].weight = 5  # type: ignore[misc]


def test_more_specific_overlaps_are_fine() -> None:
    parse_config_text(
        "routes:\n"
        "  - {name: a, match: {path_prefix: /v1}, stable: x, versions: [{name: x, url: 'http://h:1'}]}\n"
        "  - {name: b, match: {path_prefix: /v1, model: m}, stable: x,"
        " versions: [{name: x, url: 'http://h:2'}]}\n"
        "  - {name: c, match: {path_prefix: /v1, model: n}, stable: x,"
        " versions: [{name: x, url: 'http://h:3'}]}\n")


@pytest.mark.parametrize("text", ["x: [" + ",".join(["1"] * 300_000) + "]\n",
                                  "".join(f"k{i}: 1\n" for i in range(60_000))])
def test_a_config_of_too_many_nodes_is_refused_early(text: str) -> None:
    """Pure-Python YAML costs ~30 us a node, in the reload's thread, which shares the GIL
    with the data plane's loop: 600 KB of `[1,1,...]` parsed for 8 s of CPU, the loop's
    round trips 6x slower meanwhile (ninth hostile review). Refused past MAX_NODES (a real
    config takes ~30 bytes a node: 1 MiB of one is ~35,000)."""
    with pytest.raises(ConfigError, match="more than 50000 nodes"):
        parse_config_text(text)


def test_each_example_keeps_its_own_state_files() -> None:
    """minimal.yaml and openai.yaml shared config/var/killgate-store.json (and, with
    killgate.yaml, the snapshot): a kill made while trying one example came back in the next
    (new-user review). Every shipped example names state files of its own."""
    owner: dict[str, str] = {}
    for path in EXAMPLES:
        loaded = load_config(path)
        st = loaded.config.state
        files = [st.snapshot_path] + ([st.path, st.path + ".audit.jsonl"]
                                      if st.backend == "local" else [])
        for f in files:
            real = os.path.realpath(loaded.resolve(f))
            assert owner.setdefault(real, path.name) == path.name, \
                f"{real}: {path.name} and {owner[real]}"
