"""Every duration in the config file has an upper bound: `30h` typed for `30m` is refused,
by `killgate check` and by `killgate serve` alike, saying the bound and why it is there."""

from __future__ import annotations

import os
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.config import Config
from gateway.config_analysis import STATS_KEEP_S
from gateway.config_types import parse_duration
from gateway.domain.stats import WindowStats
from tests import cli_fork

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def _models(model: type[BaseModel], path: str) -> typing.Iterator[tuple[type[BaseModel], str]]:
    yield model, path
    for name, f in model.model_fields.items():
        for a in (f.annotation, *typing.get_args(f.annotation)):
            for t in (a, *typing.get_args(a)):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    yield from _models(t, f"{path}.{name}")


def _durations() -> list[tuple[type[BaseModel], str, str]]:
    def is_duration(meta: typing.Any) -> bool:
        return any(getattr(m, "func", None) is parse_duration for m in meta)

    out = []
    for model, path in _models(Config, ""):
        for name, f in model.model_fields.items():
            if is_duration(f.metadata) or any(is_duration(typing.get_args(a)[1:])
                                              for a in typing.get_args(f.annotation)):
                out.append((model, name, f"{path}.{name}".lstrip(".")))
    return out


DURATIONS = _durations()


def test_the_walk_finds_the_durations() -> None:
    paths = {p for _, _, p in DURATIONS}
    assert {"server.drain_timeout", "routes.outlier.base_ejection",
            "routes.analysis.window", "state.max_staleness"} <= paths


@pytest.mark.parametrize(("model", "field", "path"), DURATIONS, ids=[p for _, _, p in DURATIONS])
def test_every_duration_has_an_upper_bound(model: type[BaseModel], field: str, path: str) -> None:
    with pytest.raises(ValueError, match=r"at most|between|to \d+s"):
        model.__pydantic_validator__.validate_assignment(model.model_construct(), field,
                                                         "999999h")


def test_the_analysis_bound_is_what_the_statistics_keep() -> None:
    assert WindowStats().keep == STATS_KEEP_S


def test_serve_refuses_a_long_duration_as_check_does(tmp_path: Path) -> None:
    fixture = ROOT / "tests/data/config/invalid/outlier_ejection_hours.yaml"
    cfg = tmp_path / "k.yaml"
    cfg.write_text(fixture.read_text())
    cfg.chmod(0o600)
    want = "routes[0].outlier.base_ejection: must be at most 1h"
    for args in (["check", str(cfg)], ["serve", "-c", str(cfg)]):
        # (forked from a process that imported the CLI: tests/cli_fork.py)
        res = cli_fork.run(args, dict(os.environ), str(ROOT), 30)
        assert res.returncode == 1, (args, res.stderr)
        assert want in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize(("state", "ok"), [
    ("{heartbeat_interval: 3s}", False),  # (the default lease, 5s)
    ("{heartbeat_interval: 1s, instance_lease: 1s}", False),
    ("{heartbeat_interval: 2500ms}", True),
    ("{heartbeat_interval: 20s, instance_lease: 1m}", True),
])
def test_an_instance_lease_shorter_than_two_heartbeats_is_refused(state: str, ok: bool) -> None:
    """`heartbeat_interval: 3s` (a longer heartbeat divides the store's at-rest cost) with
    the default 5s lease passed check and serve: between its beats a live instance was no
    longer live, and a kill's receipt said `instances: 1, acked: 1` with two running."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    text = (f"state: {state}\nroutes:\n  - name: r\n    match: {{path_prefix: /r}}\n"
            "    stable: v1\n    versions: [{name: v1, url: 'http://127.0.0.1:1'}]\n")
    if ok:
        parse_config_text(text)
        return
    with pytest.raises(ConfigError) as refused:
        parse_config_text(text)
    assert [p.path for p in refused.value.problems] == ["state.instance_lease"]
    assert "at least twice heartbeat_interval" in refused.value.problems[0].message


@pytest.mark.parametrize(("state", "refused"), [
    ("{poll_interval: 6s, max_staleness: 2s, on_unavailable: fail_closed, "
     "instance_lease: 12s}", ["state.max_staleness"]),
    ("{poll_interval: 10s, max_staleness: 20s}", ["state.instance_lease"]),  # (lease 5s)
    ("{poll_interval: 10s, max_staleness: 20s, instance_lease: 20s}", []),
])
def test_a_poll_longer_than_the_clocks_that_follow_it_is_refused(state: str,
                                                                 refused: list[str]) -> None:
    """The store is read (and a heartbeat sent) once per poll_interval: `poll_interval: 6s`
    with `max_staleness: 2s` passed check and serve, and under fail_closed every route of a
    gateway on a healthy store answered 503 killed from 2 s into each poll to its end; a
    lease shorter than two polls left live instances out of receipts."""
    from gateway.configfile import parse_config_text
    from gateway.errors import ConfigError

    text = (f"state: {state}\nroutes:\n  - name: r\n    match: {{path_prefix: /r}}\n"
            "    stable: v1\n    versions: [{name: v1, url: 'http://127.0.0.1:1'}]\n")
    try:
        parse_config_text(text)
        got = []
    except ConfigError as exc:
        got = [p.path for p in exc.problems]
    assert got == refused
