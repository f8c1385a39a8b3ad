"""`killgate check FILE...` (CONTRACT §1): each file as `serve` would load it, and what
`serve` would refuse or note about it that the file alone does not say (the admin token
secret or keys, scoped keys, the state's signing keys and files, webhook secrets,
approval gaps, shadows no gate reads). Exit 1 when any file has a problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from gateway.config import AuthConfig
from gateway.configfile import LoadedConfig, load_config, missing_log_folder, state_file_problems
from gateway.errors import ConfigError
from gateway.filemodes import key_env, read_key_file

__all__ = ["cmd_check"]


def cmd_check(args: argparse.Namespace) -> int:
    """Each file in turn (`killgate check config/*.yaml`); exit 1 when any has a problem.
    With more than one, every problem and note names its file first."""
    rc = 0
    for file in args.file:
        prefix = f"{file}: " if len(args.file) > 1 else ""

        def say(line: str, p: str = prefix) -> None:
            # (a file that cannot be read is named by the problem itself)
            print(line if line.startswith(p) else p + line, file=sys.stderr)

        rc = max(rc, _check_one(file, say))
    return rc


def _check_one(file: str, say: Callable[[str], None]) -> int:
    try:
        loaded = load_config(file)
    except ConfigError as exc:
        for p in exc.problems:
            say(str(p))
        return 1
    cfg = loaded.config
    auth = cfg.admin.auth
    failed = False  # (every problem is said, not the first one's only: CONTRACT §1)
    if not auth.jwks_url:  # (a JWKS endpoint is not fetched here)
        from gateway.admin.auth import Authenticator

        problem = Authenticator(auth, loaded.resolve).problem
        from_env = not (auth.hs256_secret_file or auth.public_key_file)
        env = auth.secret_env
        if problem and from_env and not os.environ.get(env):
            # the secret is the deployment's business: say what the admin API will need
            say(f"note: admin.auth: {problem}; until then every admin call answers 503")
        elif problem:
            say(f"admin.auth: {problem}")
            failed = True
    if auth.scoped_keys and _scoped_key_problems(auth, loaded, say):
        failed = True
    drills = cfg.drills
    if drills.key_file or (drills.key_env and os.environ.get(drills.key_env)):
        # (named, and not usable: `serve` starts, and says so at the first drill, 409)
        from gateway.admin.drillsupport import load_drill_key

        if (problem := load_drill_key(loaded)[1]) is not None:
            say(f"note: drills: {problem}; every drill is refused (409 no_drill_key) until "
                "it is")
    from gateway.state.signing import check_keys

    errors, notes = check_keys(cfg.state, loaded.resolve)
    errors += state_file_problems(loaded, folders=False)
    if (folder := missing_log_folder(loaded)) is not None:
        # (the host `check` runs on, CI's, need not have the deployed host's folders)
        say(f"note: {folder}; `killgate serve` refuses to start until it exists")
    hook_errors, hook_notes = _webhook_secrets(loaded)
    for p in notes:
        say(f"note: {p}; `killgate serve` refuses to start until it is")
    from gateway.config_checks import (
        approval_gaps,
        doubled_prefixes,
        otlp_grpc_port,
        ungated_shadows,
    )
    from gateway.config_protocol import protocol_hints

    for note in [*hook_notes, *approval_gaps(cfg), *ungated_shadows(cfg), *otlp_grpc_port(cfg),
                 *doubled_prefixes(cfg), *protocol_hints(cfg)]:
        say(f"note: {note}")
    for line in [*map(str, errors), *hook_errors]:
        say(line)
    if errors or hook_errors or failed:
        return 1
    print(f"{file}: ok ({len(cfg.routes)} route(s), {loaded.digest})")
    return 0


def _scoped_key_problems(auth: AuthConfig, loaded: LoadedConfig,
                         say: Callable[[str], None]) -> bool:
    """Say what is wrong with admin.auth.scoped_keys' secrets; True when any is an error."""
    from gateway.admin.auth import Authenticator
    from gateway.admin.scopedkeys import check_scoped_keys, load_scoped_keys

    keys = (load_scoped_keys(auth.scoped_keys, loaded.resolve, None) if auth.jwks_url
            else Authenticator(auth, loaded.resolve).scoped)
    errors, notes = check_scoped_keys(keys, auth.scoped_keys, dict(os.environ))
    for line in notes:
        say(f"note: {line}")
    for line in errors:
        say(line)
    return bool(errors)


def _webhook_secrets(loaded: LoadedConfig) -> tuple[list[str], list[str]]:
    """(errors, notes) about events.webhooks' signing secrets: the gateway sends nothing to
    a webhook whose secret it cannot read (each event an ERROR `event_not_sent`)."""
    from gateway.control.events import MIN_SECRET

    errors: list[str] = []
    notes: list[str] = []
    for i, hook in enumerate(loaded.config.events.webhooks):
        where = f"events.webhooks[{i}]"
        if hook.secret_file is not None:
            path = loaded.resolve(hook.secret_file)
            try:
                size = len(read_key_file(path).strip())
            except OSError as exc:
                errors.append(f"{where}.secret_file: {path}: cannot read ({exc.strerror}); "
                              "no event would be sent to this webhook")
                continue
            if size < MIN_SECRET:
                errors.append(f"{where}.secret_file: {path} holds {size} bytes, fewer than "
                              f"{MIN_SECRET}; no event would be sent to this webhook")
        elif hook.secret_env is not None:
            try:
                size = len(key_env(hook.secret_env).encode())
            except ValueError as exc:
                errors.append(f"{where}.secret_env: {exc}")
                continue
            if size >= MIN_SECRET:
                continue
            notes.append(f"{where}.secret_env: {hook.secret_env} is not set here (or shorter "
                         f"than {MIN_SECRET} bytes); the gateway sends this webhook nothing "
                         "until it is")
    return errors, notes
