"""The config bytes the workers of one `serve --workers N` group share.

A worker that starts apart from its siblings (the slower one at start, one restarted
after a crash) must serve what they run, not the config file as it is by then: an edit
nobody reloaded (the watcher off, no SIGHUP yet), or one the others refused (a version
whose identity changed). So the supervisor writes the bytes it read into its private run
directory, every worker starts from that file, and every worker writes back the bytes of
each config a reload puts live (by the watcher or SIGHUP): the file holds what the group
last applied. A worker that cannot read it, or finds it invalid, starts from the config
file itself, with a warning (it may then run an edit its siblings have not applied, until
their next reload), and does not write that back: only reloads do. A copy the state refuses
at a worker's start (a latched override on a version it lacks: a write-back that failed)
gives way to the file too, when the state accepts that (`file_instead`): else every restart
of that slot was refused, a crash loop for good.

Settings that apply at a restart (`state`, `server`, `log`, `telemetry`, the listeners) apply
at the group's: a reload leaves them as the group started in every running worker, so a
worker started later takes them from the bytes the supervisor started on (`<shared>.start`),
the rest from the group's bytes. Otherwise a worker restarted after a reload that named
another store ran against it, beside siblings on the old one, sharing their ports: a kill
through the admin port reached only the workers on the store it was written to.

The copy has the config file's content: it is written 0600 in the supervisor's 0700 run
directory and removed with it when the supervisor exits (a supervisor killed by SIGKILL
leaves the directory behind, as any crashed process leaves its temporary files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from gateway.configfile import LoadedConfig, load_config, read_config_bytes, restart_changes
from gateway.configsettle import settled_at_start
from gateway.errors import ConfigError
from gateway.log import event

__all__ = ["file_instead", "load_at_start", "load_shared", "save", "start_copy"]

log = logging.getLogger("killgate")


def save(path: str, data: bytes) -> bool:
    """Replace the file at `path` by `data` at once (a worker starting meanwhile reads the
    old bytes or the new, never a part; two writers each replace it whole), readable by
    this user only. False, with a warning, when it cannot be written."""
    folder = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=folder)  # (0600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)  # (stale now: a worker started later reads the file itself)
        event(log, "worker_config_not_saved", logging.WARNING, error=str(exc),
              consequence="a worker started later reads the config file itself, which may "
                          "hold an edit the other workers have not applied")
        return False
    return True


def load_at_start(config_path: str) -> tuple[LoadedConfig, str | None]:
    """The config file as a first load reads it: once no process writes it (waiting a
    little, configsettle.py), and why it never settled, if it did not (the caller logs it
    with `warn_unsettled` once its logging is set up)."""
    data, unsettled = settled_at_start(config_path)
    return load_config(config_path, data), unsettled


def start_copy(shared: str) -> str:
    """Where the supervisor keeps the bytes it started on, beside the group's `shared`."""
    return shared + ".start"


def load_shared(config_path: str, shared: str) -> tuple[LoadedConfig, str | None]:
    """The config a worker starts from: the group's bytes at `shared`, parsed as the file
    at `config_path`; or, when they cannot be read or are not valid, the file itself (as
    `load_at_start` reads it); either with the settings that apply at a restart as the
    group started."""
    try:
        loaded, unsettled = load_config(config_path, read_config_bytes(shared)), None
    except ConfigError as exc:
        event(log, "worker_config_unreadable", logging.WARNING, shared=shared,
              problems=[str(p) for p in exc.problems],
              fallback=f"reading {Path(config_path)} itself")
        loaded, unsettled = load_at_start(config_path)
    try:
        started = load_config(config_path, read_config_bytes(start_copy(shared)))
    except ConfigError as exc:
        event(log, "worker_config_unreadable", logging.WARNING, shared=start_copy(shared),
              problems=[str(p) for p in exc.problems],
              consequence="settings that apply at a restart (state, server, log, telemetry, "
                          "listen) are taken from the group's config, which may be a reload "
                          "the other workers have not applied them from")
        return loaded, unsettled
    return as_started(loaded, started), unsettled


def file_instead(config_path: str, running: LoadedConfig,
                 refused: ConfigError) -> LoadedConfig | None:
    """For a worker whose start the state refuses on the group's bytes (`running`: a latched
    override on a version they lack, as when a reload's write-back failed, a full TMPDIR):
    the config file itself, which the running workers' reloads put live, with `running`'s
    restart settings (its start used them already); None when it cannot be read or is the
    same bytes (the refusal then ends the start: a crash loop, as before)."""
    try:
        loaded = load_config(config_path)  # (no wait for a writer: the loop runs)
    except ConfigError:
        return None
    if loaded.digest == running.digest:
        return None
    event(log, "worker_config_refused", logging.WARNING,
          problems=[str(p) for p in refused.problems],
          fallback=f"starting from {Path(config_path)} itself, if the state accepts it")
    return as_started(loaded, running)


def as_started(loaded: LoadedConfig, started: LoadedConfig) -> LoadedConfig:
    """`loaded` with the settings that apply at a restart taken from `started` (its digest
    and bytes stay `loaded`'s: the group's, as its siblings report them)."""
    a, b = loaded.config, started.config
    changed = restart_changes(a, b)
    if not changed:
        return loaded
    update: dict[str, Any] = {name: getattr(b, name) for name in changed if "." not in name}
    fields: dict[str, dict[str, Any]] = {}  # ("admin.listen", "drills.key_env": one field)
    for name in changed:
        if "." in name:
            section, field = name.split(".", 1)
            fields.setdefault(section, {})[field] = getattr(getattr(b, section), field)
    for section, values in fields.items():
        update[section] = getattr(a, section).model_copy(update=values)
    event(log, "worker_config_restart_settings", settings=changed,
          kept="as the group started: they apply when the whole group restarts")
    return LoadedConfig(a.model_copy(update=update), loaded.digest, loaded.path, loaded.raw,
                        tuple(changed))
