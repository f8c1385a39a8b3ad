"""Reading a config file: YAML in, a validated `Config` (or every problem) out.

Owns reading the file (1 MiB cap, UTF-8), the order of the steps (strict YAML in
config_yaml.py, the schema, its errors in our words in config_problems.py, the cross-field
checks in config_checks.py) and `LoadedConfig` (a config plus its digest and folder).
`load_config` raises one `ConfigError` carrying all problems.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config import Config
from gateway.config_checks import semantic_problems
from gateway.config_problems import problems_from
from gateway.config_yaml import load_yaml
from gateway.errors import ConfigError, Problem
from gateway.filemodes import config_problem

__all__ = ["RESTART_ONLY", "LoadedConfig", "load_config", "missing_log_folder",
           "parse_config_text", "read_config_bytes", "read_config_stat",
           "restart_changes", "state_file_problems"]

MAX_FILE_BYTES = 1 << 20


class LoadedConfig:
    """A validated config plus where it came from (and, read from a file, its bytes);
    immutable once built."""

    __slots__ = ("base_dir", "config", "digest", "path", "raw", "restart_pending")

    def __init__(self, config: Config, digest: str, path: Path | None,
                 raw: bytes | None = None, restart_pending: tuple[str, ...] = ()) -> None:
        self.config = config
        self.digest = digest
        self.path = path
        self.raw = raw
        self.base_dir = path.parent if path is not None else Path.cwd()
        #: the settings that apply at a restart in which `raw` differs from `config`: a
        #: group's worker started on a reload's bytes runs them as the group started
        #: (workerconfig.as_started), and says so as its siblings do (restart_required)
        self.restart_pending = restart_pending

    def resolve(self, p: str) -> Path:
        """Relative file paths in a config are relative to the config file's folder."""
        q = Path(p)
        return q if q.is_absolute() else self.base_dir / q


#: the settings a running process does not change on a reload (they apply when it starts):
#: whole sections, the admin listener's, the drill key settings (read once, at start) and
#: the size of the events' queue (made once, at start)
RESTART_ONLY = ("listen", "state", "server", "log", "telemetry", "admin.listen",
                "admin.max_body_size", "admin.max_connections", "drills.key_env",
                "drills.key_file", "drills.advertise_host", "events.queue")


def restart_changes(a: Config, b: Config) -> list[str]:
    """The settings that differ between `a` and `b` and that a running process does not
    change on a reload (they apply when it starts)."""
    out = []
    for name in RESTART_ONLY:
        x, y = a, b
        for part in name.split("."):
            x, y = getattr(x, part), getattr(y, part)
        if x != y:
            out.append(name)
    return out


def state_file_problems(loaded: LoadedConfig, *, folders: bool = True) -> list[Problem]:
    """The state files the config names (the snapshot, a local store and its audit trail,
    the audit mirror, the access log) that are one file under two settings, or exist and
    are no regular file. Each is read whole, in the start-up's thread or one `serve` waits
    for at its end: a FIFO there hung the start (SIGTERM held, nothing said), /dev/zero was
    read until memory ran out; and a snapshot_path equal to state.path had the store and
    the snapshot overwrite each other's file, each refusing the other's signature: a
    'state_unverified' tamper alarm and a re-seed at every write. `killgate check` and
    `serve`'s start refuse them (a missing file is created; one that cannot be read is
    reported by its reader). `folders=False` leaves out an access log's folder that does not
    exist (yet): `check`, run where the config is written (CI), notes it instead, as it
    notes a secret set only where killgate runs (`missing_log_folder`)."""
    st = loaded.config.state
    named = [("state.snapshot_path", st.snapshot_path)]
    if st.backend == "local":
        named += [("state.path", st.path),
                  ("the audit trail of state.path", st.path + ".audit.jsonl")]
    if st.audit_mirror:
        named.append(("state.audit_mirror", st.audit_mirror))
    out = []
    seen: dict[str, str] = {}
    log_path = loaded.config.telemetry.access_log.path
    if loaded.config.server.access_log and log_path:
        seen[os.path.realpath(loaded.resolve(log_path))] = "telemetry.access_log.path"
        out += _access_log_problems(loaded.resolve(log_path), folders)
    for where, value in named:
        p = loaded.resolve(value)
        other = seen.setdefault(os.path.realpath(p), where)
        if other != where:
            out.append(Problem(where.split(" ")[-1], f"{p}: {where} and {other} are the same "
                                                     "file, each written on its own; name another"))
            continue
        if where.startswith("the audit trail"):
            continue
        try:
            mode = p.stat().st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            out.append(Problem(where, f"{p} is a folder, device, FIFO or socket: killgate "
                                      "reads and writes this file whole; name a file"))
    return out


def _access_log_problems(p: Path, folders: bool = True) -> list[Problem]:
    """An access log `serve` could not open (its start is refused then; `check` said ok):
    a folder, a file in a file, or (`folders`) a file in a folder that does not exist."""
    where = "telemetry.access_log.path"
    if p.is_dir():
        return [Problem(where, f"{p} is a folder: name a file (lines are appended to it)")]
    if not p.parent.is_dir() and (folders or _in_a_file(p)):
        return [Problem(where, f"{p}: its folder {p.parent} does not exist (or is no folder): "
                               "create it, or name a file in another")]
    return []


def _in_a_file(p: Path) -> bool:
    """Whether a folder above `p` is a file (no host could ever open `p`)."""
    return any(a.exists() and not a.is_dir() for a in p.parents)


def missing_log_folder(loaded: LoadedConfig) -> Problem | None:
    """The access log's folder, when it does not exist here (nor is a file)."""
    log_path = loaded.config.telemetry.access_log.path
    if not (loaded.config.server.access_log and log_path):
        return None
    p = loaded.resolve(log_path)
    if p.is_dir() or p.parent.is_dir() or _in_a_file(p):
        return None
    return Problem("telemetry.access_log.path", f"{p}: its folder {p.parent} does not exist "
                                                "on this host")


def parse_config_text(text: str, source: str = "<config>") -> Config:
    """Parse and validate YAML text; raises ConfigError with every problem found."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ConfigError([Problem("", f"{source}: larger than {MAX_FILE_BYTES} bytes")])
    data = load_yaml(text, source)
    if data is None:
        raise ConfigError([Problem("", f"{source}: the file is empty")])
    if not isinstance(data, dict):
        raise ConfigError([Problem("", f"{source}: the top level must be a mapping")])
    if "apiVersion" in data and "kind" in data and "routes" not in data:
        raise ConfigError([Problem("", _manifest(source, data))])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc)) from None
    problems = semantic_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _manifest(source: str, data: dict[Any, Any]) -> str:
    """What to say of a Kubernetes manifest given as the config (review as a new user:
    `killgate check deploy/kubernetes/.../configmap.yaml` said `apiVersion: unknown key`,
    `kind: unknown key`, `routes: required`): the config a ConfigMap holds is one of its
    values."""
    said = f"{source}: a Kubernetes {str(data['kind'])[:40]!r} manifest, not a killgate config"
    held = data.get("data")
    names = [k for k in held if isinstance(k, str) and k.endswith((".yaml", ".yml"))] \
        if isinstance(held, dict) else []
    if not names:
        return said
    key = json.dumps(names[0])
    file = "FILE" if source.startswith("<") else shlex.quote(source)
    # (the expression quoted as a whole: a key is the file's text, and one holding a `'`
    # made the printed command run what followed it in the operator's shell)
    return (f"{said}; the config it holds is data[{key}]: check that, e.g. `yq -r "
            f"{shlex.quote(f'.data[{key}]')} {file} > /tmp/k.yaml && killgate check "
            "/tmp/k.yaml`")


def read_config_bytes(path: str | Path) -> bytes:
    """The file's bytes, or a ConfigError saying why they cannot be read. Only a regular
    file (a link to one is followed, as a ConfigMap's is) of at most MAX_FILE_BYTES is read:
    a config replaced by a link to /dev/zero or a FIFO would have been read until memory
    ran out, or blocked the reading thread (and the reload lock) for ever."""
    return read_config_stat(path)[0]


def read_config_stat(path: str | Path, probe: Callable[[int], None] | None = None
                     ) -> tuple[bytes, os.stat_result, os.stat_result]:
    """As read_config_bytes, with the open file's fstat before and after the read (what
    configsettle.py compares); `probe(fd)`, given, runs on the open file before the read
    and may raise to stop it."""
    p = Path(path)
    try:
        # (O_NONBLOCK: opening a FIFO waits for a writer otherwise; a regular file ignores it)
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError([Problem("", f"{p}: no such file")]) from None
    except PermissionError:
        raise ConfigError([Problem("", f"{p}: permission denied")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem("", f"{p}: is a directory")]) from None
    except OSError as exc:
        raise ConfigError([Problem("", f"{p}: cannot read ({exc.strerror})")]) from None
    try:
        with os.fdopen(fd, "rb", buffering=0) as f:
            before = os.fstat(fd)
            if stat.S_ISDIR(before.st_mode):
                raise ConfigError([Problem("", f"{p}: is a directory")])
            if not stat.S_ISREG(before.st_mode):
                raise ConfigError([Problem("", f"{p}: not a regular file (a device, FIFO or "
                                               "socket is never read as a config; for a "
                                               "generated one, such as `<(kustomize build)`, "
                                               "write it to a file first)")])
            loose = config_problem(p, before, _folder_of(p))
            if loose is not None:
                raise ConfigError([Problem("", loose)])
            if probe is not None:
                probe(fd)
            data = b""
            while len(data) <= MAX_FILE_BYTES:  # (a short read is not the end of a file)
                more = f.read(MAX_FILE_BYTES + 1 - len(data))
                if not more:
                    break
                data += more
            after = os.fstat(fd)
    except OSError as exc:
        raise ConfigError([Problem("", f"{p}: cannot read ({exc.strerror})")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([Problem("", f"{p}: larger than {MAX_FILE_BYTES} bytes")])
    return data, before, after


def _folder_of(p: Path) -> os.stat_result | None:
    """The stat of the folder that holds the file `p` names (links resolved)."""
    try:
        return os.stat(os.path.dirname(os.path.realpath(p)))
    except OSError:
        return None


def load_config(path: str | Path, raw: bytes | None = None) -> LoadedConfig:
    """Read and validate the file at `path`; or, given `raw`, validate those bytes as the
    file at `path` (its folder for relative paths, its path for the watcher): a worker
    starts from the bytes its group runs (workerconfig.py), not the file's newest."""
    p = Path(path)
    if raw is None:
        raw = read_config_bytes(p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([Problem("", f"{p}: not UTF-8 at line {line} (byte {exc.start}); "
                                       "save the file as UTF-8")]) from None
    cfg = parse_config_text(text, str(p))
    # Absolute, but symlinks kept: a mounted ConfigMap's file is a link through `..data`
    # into a timestamped folder that the next update deletes. The watcher must follow the
    # link, and relative paths in the file must stay relative to the mount folder.
    return LoadedConfig(cfg, "sha256:" + hashlib.sha256(raw).hexdigest(),
                        Path(os.path.abspath(p)), raw)
