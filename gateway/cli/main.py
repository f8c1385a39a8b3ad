"""The `killgate` command line (CONTRACT §1): argument parsing and dispatch only.

Owns the commands and their exit codes; each command's work lives in its own module
(server, demo, admin client). uvloop is installed here (by server.run_worker) and nowhere
else. Exit codes: 0 ok, 1 error or invalid input, 2 usage (and `diff`: changes found).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from gateway import __version__
from gateway.config import AuthConfig, Config
from gateway.configfile import LoadedConfig, load_config, state_file_problems
from gateway.errors import ConfigError
from gateway.filemodes import key_env, read_key_file

__all__ = ["main"]


def _cmd_check(args: argparse.Namespace) -> int:
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
            return 1
    if auth.scoped_keys and _scoped_key_problems(auth, loaded, say):
        return 1
    drills = cfg.drills
    if drills.key_file or (drills.key_env and os.environ.get(drills.key_env)):
        # (named, and not usable: `serve` starts, and says so at the first drill, 409)
        from gateway.admin.drillsupport import load_drill_key

        if (problem := load_drill_key(loaded)[1]) is not None:
            say(f"note: drills: {problem}; every drill is refused (409 no_drill_key) until "
                "it is")
    from gateway.state.signing import check_keys

    errors, notes = check_keys(cfg.state, loaded.resolve)
    errors += state_file_problems(loaded)
    hook_errors, hook_notes = _webhook_secrets(loaded)
    for p in notes:
        say(f"note: {p}; `killgate serve` refuses to start until it is")
    from gateway.config_checks import approval_gaps, ungated_shadows

    for note in [*hook_notes, *approval_gaps(cfg), *ungated_shadows(cfg)]:
        say(f"note: {note}")
    for line in [*map(str, errors), *hook_errors]:
        say(line)
    if errors or hook_errors:
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


def _cmd_schema(args: argparse.Namespace) -> int:
    schema = Config.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "killgate config"
    print(json.dumps(schema, indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    # Held, not acted on, until `serve` handles them (the import below alone takes a
    # second): a SIGHUP's default action ends the process, a SIGTERM's ends it with -15.
    from gateway.workergroup import STOP_AND_RELOAD

    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_AND_RELOAD)
    from gateway.server import serve

    return serve(args.config, args.workers, args.worker_index, args.reuse_port,
                 args.data_port, args.admin_port, args.metrics_dir, args.config_bytes)


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.cli.demo import run_demo

    return run_demo(args.port, args.admin_port)


#: a JWS in compact form (what --token and $KILLGATE_TOKEN hold): three base64url parts
_JWT = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors never print a token: they quote the words they refuse,
    and a token given with a mistyped option (`--tokn`) or where a command goes would be
    printed whole (a CI job's log, a shared terminal). Subcommands' parsers are of this
    class too (argparse makes them of their parent's)."""

    def error(self, message: str) -> NoReturn:
        super().error(_JWT.sub("(a token, not shown)", message))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="killgate", description="An inference gateway with canary split, kill "
                                             "switch and rollback.")
    p.add_argument("--version", action="version", version=f"killgate {__version__}")
    from gateway.cli.admin import add_client_commands
    from gateway.cli.client import common_options

    common_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gateway from a config file")
    s.add_argument("-c", "--config", required=True, metavar="FILE",
                   help="the config file (YAML; `killgate check FILE` validates it)")
    s.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes sharing the ports (SO_REUSEPORT)")
    s.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("--data-port", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--admin-port", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--metrics-dir", default=None, help=argparse.SUPPRESS)
    s.add_argument("--config-bytes", default=None, help=argparse.SUPPRESS)
    s.set_defaults(fn=_cmd_serve)

    c = sub.add_parser("check", help="validate config files")
    c.add_argument("file", nargs="+", metavar="FILE",
                   help="config files (YAML): each is read as `serve` would, keys included")
    c.set_defaults(fn=_cmd_check)

    sc = sub.add_parser("schema", help="print the JSON Schema of the config file")
    sc.set_defaults(fn=_cmd_schema)

    d = sub.add_parser("demo", help="run two demo model backends and a gateway in front")
    d.add_argument("--port", type=int, default=8080, help="data-plane port (default 8080)")
    d.add_argument("--admin-port", type=int, default=8081, help="admin port (default 8081)")
    d.set_defaults(fn=_cmd_demo)

    add_client_commands(sub)
    from gateway.cli.drill import add_drill_commands

    add_drill_commands(sub, common_options)
    from gateway.cli.shadow import add_shadow_commands

    add_shadow_commands(sub, common_options)
    return p


_VALUED = frozenset({"--admin", "--token", "--timeout"})  # top-level options with a value


def _command(argv: list[str]) -> str | None:
    """The subcommand `argv` names (the first word not an option or an option's value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--":  # (the options end: the next word is the command)
            continue
        elif word in _VALUED or (word.startswith("--") and "=" not in word and any(
                v.startswith(word) for v in _VALUED)):  # (argparse takes `--adm` too)
            skip = True
        elif not word.startswith("-"):
            return word
    return None


#: the commands that take the route as their first word or `--route` (cli/writes.py)
_ROUTE_COMMANDS = frozenset({"rollback", "promote", "weights", "release"})


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, but a word the subcommand does not know is said with the subcommand's
    usage, not the top level's (`killgate drill kill --bogus` showed `killgate [-h]
    ... COMMAND ...`, which says nothing of what `drill kill` takes)."""
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    if args.command in _ROUTE_COMMANDS and not any(w.startswith("-") for w in extra):
        args.more = extra  # (positional words argparse left over: cli/writes.py orders them)
        return args
    msg = "unrecognized arguments: " + " ".join(extra)
    inner = parser
    while True:  # (down to the innermost subcommand named: `drill kill`, `shadow report`)
        subs = [a for a in inner._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            break
        inner = subs[0].choices[name]
    inner.error(msg)  # (exits 2)
    raise AssertionError  # unreachable


def _main(argv: list[str] | None) -> int:
    try:
        args = _parse(build_parser(), argv)
    except SystemExit as exc:
        # `diff` exits 2 when the file would change something: a mistyped option must not
        # read as that in a pipeline (argparse's usage errors exit 2); it is an error, 1
        if exc.code == 2 and _command(sys.argv[1:] if argv is None else argv) == "diff":
            raise SystemExit(1) from None
        raise
    if args.command == "serve" and args.workers < 1:
        print("killgate: --workers must be >= 1", file=sys.stderr)
        return 2
    return int(args.fn(args))


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # (here, not at exit, also after --help: a reader that left is handled)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `killgate ... --json | head`: the reader left before the output ended. Not an
        # error of ours to show a traceback for; exit like a process killed by SIGPIPE,
        # and keep the interpreter's last flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
