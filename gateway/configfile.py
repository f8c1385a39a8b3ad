"""Reading a config file: YAML in, a validated `Config` (or every problem) out.

Owns the YAML loader (duplicate keys and alias bombs refused, 1 MiB cap), the translation
of pydantic errors into `Problem(yaml_path, message)` with "did you mean" hints, the
cross-field checks pydantic cannot express, and `LoadedConfig` (a config plus its digest and
folder). `load_config` raises one `ConfigError` carrying all problems.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gateway import config_shadow, config_telemetry
from gateway.config import Config, parse_listen
from gateway.errors import ConfigError, Problem

__all__ = ["LoadedConfig", "format_path", "load_config", "parse_config_text"]

MAX_FILE_BYTES = 1 << 20
MAX_ALIASES = 64
#: nodes in the document with every alias expanded: a few aliases nested in each other
#: multiply (8 levels of 8 make 16 million), and whatever walks the result pays for them
MAX_EXPANDED_NODES = 100_000


class LoadedConfig:
    """A validated config plus where it came from; immutable once built."""

    __slots__ = ("base_dir", "config", "digest", "path")

    def __init__(self, config: Config, digest: str, path: Path | None) -> None:
        self.config = config
        self.digest = digest
        self.path = path
        self.base_dir = path.parent if path is not None else Path.cwd()

    def resolve(self, p: str) -> Path:
        """Relative file paths in a config are relative to the config file's folder."""
        q = Path(p)
        return q if q.is_absolute() else self.base_dir / q


# ---------------------------------------------------------------- YAML loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and caps alias expansion (billion laughs)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases: refusing to expand")
        return super().compose_node(parent, index)

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and self._aliases:
            _expanded_size(node)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: Any) -> int:
    """Nodes in the tree under `root` with aliases expanded (each anchored node counted
    once per reference, its size computed once); refuses past MAX_EXPANDED_NODES and
    refuses a node that contains itself."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in busy:
            raise yaml.YAMLError("an alias refers to a node that contains it")
        busy.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n += size(child)
                if n > MAX_EXPANDED_NODES:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += size(k) + size(v)
                if n > MAX_EXPANDED_NODES:
                    break
        if n > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"aliases expand the document past {MAX_EXPANDED_NODES} "
                                 "nodes: refusing to expand")
        busy.discard(key)
        sizes[key] = n
        return n

    return size(root)


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the model that holds `loc[-1]`, for 'did you mean' hints."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        for cand in _unwrap(ann):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
        else:
            return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _unwrap(ann: Any) -> Iterator[Any]:
    args = getattr(ann, "__args__", None)
    if not args:
        yield ann
        return
    for a in args:
        yield from _unwrap(a)


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# pydantic error type -> our wording ({names} are the error's context values)
_TEMPLATES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "too_short": "must have at least {min_length} item(s)",
    "literal_error": "must be one of {expected}",
    "string_pattern_mismatch": "must match {pattern}",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
}


def _message(err: Any) -> str:
    typ = err["type"]
    ctx = err.get("ctx", {})
    if typ == "missing":
        return "required"
    if typ == "extra_forbidden":
        name = err["loc"][-1]
        hint = difflib.get_close_matches(str(name), _known_fields(err["loc"]), n=1)
        return "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    if typ == "value_error":
        return str(ctx.get("error", err["msg"]))
    template = _TEMPLATES.get(typ)
    if template is not None:
        return template.format(**{k: _num(v) for k, v in ctx.items()})
    return str(err["msg"]).replace("Input should be", "must be")


def _problems_from(exc: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        out.append(Problem(format_path(loc), _message(err)))
    return out


def _key_problems(cfg: Config) -> list[Problem]:
    """The state and audit keys: one source each, and a signing key with redis."""
    st = cfg.state
    out: list[Problem] = []
    for name in ("signing_key", "previous_signing_key", "audit_key", "previous_audit_key"):
        if getattr(st, f"{name}_env") and getattr(st, f"{name}_file"):
            out.append(Problem(f"state.{name}_file", f"give {name}_env or {name}_file, not both"))
    signing = st.signing_key_env or st.signing_key_file
    if st.backend == "redis" and not signing:
        out.append(Problem(
            "state.signing_key_env",
            "required with backend redis (or signing_key_file): without it, anyone who can "
            "write to Redis could lift a kill. Name an environment variable that holds the "
            "same secret of at least 32 bytes on every instance, e.g. `signing_key_env: "
            "KILLGATE_STATE_KEY` and `export KILLGATE_STATE_KEY=$(openssl rand -hex 32)`"))
    if not signing and (st.previous_signing_key_env or st.previous_signing_key_file):
        out.append(Problem("state.previous_signing_key_env",
                           "needs signing_key_env or signing_key_file (the key that signs)"))
    if not (st.audit_key_env or st.audit_key_file) and (
            st.previous_audit_key_env or st.previous_audit_key_file):
        out.append(Problem("state.previous_audit_key_env",
                           "needs audit_key_env or audit_key_file (the key that signs)"))
    return out


def _semantic_problems(cfg: Config) -> list[Problem]:
    """Cross-field checks pydantic cannot express per field."""
    out: list[Problem] = []
    _data_host, data_port = parse_listen(cfg.listen)
    _, admin_port = parse_listen(cfg.admin.listen)
    if data_port != 0 and admin_port == data_port:
        out.append(Problem("admin.listen", f"must not use the data-plane port {data_port}"))
    auth = cfg.admin.auth
    sources = [auth.hs256_secret_file, auth.public_key_file, auth.jwks_url]
    hs = [a for a in auth.algorithms if a.startswith("HS")]
    asym = [a for a in auth.algorithms if not a.startswith("HS")]
    if hs and asym:
        out.append(Problem("admin.auth.algorithms",
                           "mixes HMAC and public-key algorithms; a key is used with one type only"))
    if asym and not (auth.public_key_file or auth.jwks_url):
        out.append(Problem("admin.auth", f"{asym[0]} needs public_key_file or jwks_url"))
    if hs and (auth.public_key_file or auth.jwks_url):
        out.append(Problem("admin.auth.algorithms",
                           "HS* algorithms cannot be used with public_key_file or jwks_url"))
    if sum(s is not None for s in sources) > 1:
        out.append(Problem("admin.auth", "give only one of hs256_secret_file, public_key_file, "
                                         "jwks_url"))
    out += _key_problems(cfg)
    seen_routes: dict[str, int] = {}
    for i, r in enumerate(cfg.routes):
        base = f"routes[{i}]"
        if r.name in seen_routes:
            out.append(Problem(f"{base}.name",
                               f"duplicate route name {r.name!r} (also routes[{seen_routes[r.name]}])"))
        seen_routes.setdefault(r.name, i)
        if r.match.keys() == 0:
            out.append(Problem(f"{base}.match",
                               "needs at least one of path_prefix, host, header, model"))
        names: dict[str, int] = {}
        for j, v in enumerate(r.versions):
            if v.name in names:
                out.append(Problem(f"{base}.versions[{j}].name",
                                   f"duplicate version name {v.name!r} in route {r.name!r}"))
            names.setdefault(v.name, j)
        if r.stable not in names:
            out.append(Problem(f"{base}.stable",
                               f"names no version of this route ({', '.join(names)})"))
        if all(v.weight == 0 for v in r.versions) and r.stable not in names:
            out.append(Problem(f"{base}.versions", "every weight is 0 and there is no stable"))
        if r.sticky and r.allow_pin and r.sticky.header == "x-killgate-pin":
            out.append(Problem(f"{base}.sticky.header", "must not be x-killgate-pin"))
        if r.health and r.health.timeout >= r.health.interval:
            out.append(Problem(f"{base}.health.timeout", "must be shorter than health.interval"))
        if r.analysis is not None and len(r.versions) != 2:
            out.append(Problem(f"{base}.analysis",
                               "canary analysis needs exactly two versions: the stable and one "
                               "canary"))
        if r.timeouts.connect > r.timeouts.total:
            out.append(Problem(f"{base}.timeouts.connect", "must not exceed timeouts.total"))
    out.extend(_drill_routes(cfg))
    out.extend(_overlaps(cfg))
    for i, r in enumerate(cfg.routes):
        others = {v.name: o.name for o in cfg.routes if o is not r for v in o.versions}
        out.extend(Problem(path, msg) for path, msg in config_shadow.problems(i, r, others))
    out.extend(Problem(path, msg) for path, msg in config_telemetry.problems(
        cfg.telemetry, cfg.alerts, (r.name for r in cfg.routes)))
    return out


def _drill_routes(cfg: Config) -> list[Problem]:
    """A drill route mirrors a production route: the same versions (names and backends),
    so a drill on it exercises what users are served by."""
    out: list[Problem] = []
    for i, r in enumerate(cfg.routes):
        if r.drill_for is None:
            continue
        where = f"routes[{i}].drill_for"
        prod = cfg.route(r.drill_for)
        if prod is None or prod is r:
            out.append(Problem(where, f"names no other route ({r.drill_for!r})"))
        elif prod.drill_for is not None:
            out.append(Problem(where, f"{prod.name!r} is itself a drill route"))
        elif {(v.name, v.url) for v in r.versions} != {(v.name, v.url) for v in prod.versions}:
            out.append(Problem(f"routes[{i}].versions",
                               f"a drill route serves the same versions as {prod.name!r} "
                               "(the same names and urls)"))
    return out


def _overlaps(cfg: Config) -> list[Problem]:
    """Two equally specific routes that can match the same request are ambiguous."""
    out: list[Problem] = []
    routes = cfg.routes
    for i in range(len(routes)):
        for j in range(i + 1, len(routes)):
            a, b = routes[i].match, routes[j].match
            if (len(a.path_prefix or ""), a.keys()) != (len(b.path_prefix or ""), b.keys()):
                continue
            pa, pb = a.path_prefix, b.path_prefix
            if pa is not None and pb is not None and not (a.case_sensitive and b.case_sensitive):
                pa, pb = pa.lower(), pb.lower()
            if pa != pb:
                continue  # same length, different strings: disjoint
            if a.host and b.host and a.host != b.host:
                continue
            if a.model and b.model and a.model != b.model:
                continue
            if a.header and b.header and any(
                k in b.header and b.header[k] != val for k, val in a.header.items()
            ):
                continue
            out.append(Problem(f"routes[{j}].match",
                               f"as specific as routes[{i}] ({routes[i].name!r}) and can match "
                               "the same requests; make one more specific"))
    return out


def parse_config_text(text: str, source: str = "<config>") -> Config:
    """Parse and validate YAML text; raises ConfigError with every problem found."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ConfigError([Problem("", f"{source}: larger than {MAX_FILE_BYTES} bytes")])
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem("", f"{source}: YAML syntax error{where}: {problem}")]) from None
    if data is None:
        raise ConfigError([Problem("", f"{source}: the file is empty")])
    if not isinstance(data, dict):
        raise ConfigError([Problem("", f"{source}: the top level must be a mapping")])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc)) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | Path) -> LoadedConfig:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem("", f"{p}: no such file")]) from None
    except PermissionError:
        raise ConfigError([Problem("", f"{p}: permission denied")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem("", f"{p}: is a directory")]) from None
    except OSError as exc:
        raise ConfigError([Problem("", f"{p}: cannot read ({exc.strerror})")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem("", f"{p}: not UTF-8 (byte {exc.start})")]) from None
    cfg = parse_config_text(text, str(p))
    # Absolute, but symlinks kept: a mounted ConfigMap's file is a link through `..data`
    # into a timestamped folder that the next update deletes. The watcher must follow the
    # link, and relative paths in the file must stay relative to the mount folder.
    return LoadedConfig(cfg, "sha256:" + hashlib.sha256(raw).hexdigest(),
                        Path(os.path.abspath(p)))
