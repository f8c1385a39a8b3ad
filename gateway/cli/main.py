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
import shlex
import signal
import sys
from typing import NoReturn

from gateway import __version__
from gateway.buildid import build_id
from gateway.cli.check import cmd_check
from gateway.config_schema import config_json_schema

__all__ = ["main"]


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    # Held, not acted on, until `serve` handles them (the import below alone takes a
    # second): a SIGHUP's default action ends the process, a SIGTERM's ends it with -15.
    from gateway.workerlink import STOP_AND_RELOAD

    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_AND_RELOAD)
    from gateway.server import serve

    return serve(args.config, args.workers, args.worker_index, args.reuse_port,
                 args.data_port, args.admin_port, args.metrics_dir, args.config_bytes)


def _port(text: str) -> int:
    """A TCP port for an option (argparse's own message when it is not one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.cli.demo import run_demo

    return run_demo(args.port, args.admin_port)


#: a JWS in compact form (what --token and $KILLGATE_TOKEN hold): three base64url parts
_JWT = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


#: a run that may be a key (an HMAC secret, an API key: hex, base64, base64url), checked
#: by `_keylike` before it is hidden
_KEYISH = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")


def _keylike(word: str) -> bool:
    """Whether `word` reads as a key rather than a name or path: 24 hex digits or more
    (`openssl rand -hex`), or base64/base64url with upper case, lower case and digits all in
    it (`openssl rand -base64`, token_urlsafe). Route, version and file names are one case
    (`iris-classifier-v2`) and keep being quoted, so the error still says which word."""
    core = word.rstrip("=")
    if all(c in "0123456789abcdefABCDEF" for c in core):
        return any(c.isdigit() for c in core)
    return (any(c.isupper() for c in core) and any(c.islower() for c in core)
            and any(c.isdigit() for c in core))


def _hide_secrets(message: str) -> str:
    message = _JWT.sub("(a token, not shown)", message)
    return _KEYISH.sub(lambda m: "(a key, not shown)" if _keylike(m.group()) else m.group(),
                       message)


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors never print a token or key: they quote the words they
    refuse, and a token or key given with a mistyped option (`--tokn`), after a command
    that takes no more words, or where a command goes would be printed whole (a CI job's
    log, a shared terminal). Subcommands' parsers are of this class too (argparse makes
    them of their parent's)."""

    def error(self, message: str) -> NoReturn:
        super().error(_hide_secrets(message))


#: commands whose command line is parsed without the client commands' modules (see build_parser)
LEAN = frozenset({"serve", "check", "schema"})


class _Version(argparse.Action):
    """`--version`: the release and the build (buildid.py: every commit so far is 0.1.0, so
    the release alone could not tell an upgraded host from one that is not), read only when
    asked: every command line builds this parser, and the build's digest reads the package."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> NoReturn:
        print(f"killgate {__version__} (build {build_id()})")
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; `only` (one of LEAN): the top level and that command alone,
    for a command line that starts with it. Each start of each `serve` worker, and each
    `check` (CI, an operator's edit loop), imported the client commands' modules for
    nothing: aiohttp's client, the drill runner, ~0.3 s of CPU. Such a command line parses
    the same either way: what follows the command's word is the command's."""
    p = _Parser(prog="killgate", description="An inference gateway with canary split, kill "
                                             "switch and rollback.")
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and build, and exit")
    if only is None:
        from gateway.cli.client import common_options

        common_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    if only in (None, "serve"):
        s = sub.add_parser("serve", help="run the gateway from a config file",
                           usage="killgate serve [-h] -c FILE [--workers N]")
        # (required, but checked in _parse: `killgate serve FILE`, as `check FILE` takes
        # it, is then said with the command that works, not argparse's bare "required")
        s.add_argument("-c", "--config", metavar="FILE",
                       help="the config file (YAML; `killgate check FILE` validates it); "
                            "required")
        s.add_argument("--workers", type=int, default=1, metavar="N",
                       help="worker processes sharing the ports (SO_REUSEPORT)")
        s.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
        s.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
        s.add_argument("--data-port", type=int, default=None, help=argparse.SUPPRESS)
        s.add_argument("--admin-port", type=int, default=None, help=argparse.SUPPRESS)
        s.add_argument("--metrics-dir", default=None, help=argparse.SUPPRESS)
        s.add_argument("--config-bytes", default=None, help=argparse.SUPPRESS)
        s.set_defaults(fn=_cmd_serve)

    if only in (None, "check"):
        c = sub.add_parser("check", help="validate config files")
        c.add_argument("file", nargs="+", metavar="FILE",
                       help="config files (YAML): each is read as `serve` would, keys "
                            "included")
        c.set_defaults(fn=cmd_check)

    if only in (None, "schema"):
        sc = sub.add_parser("schema", help="print the JSON Schema of the config file")
        sc.set_defaults(fn=_cmd_schema)
    if only is not None:
        from gateway.cli.helptext import describe

        describe(sub)
        return p

    d = sub.add_parser("demo", help="run two demo model backends and a gateway in front")
    d.add_argument("--port", type=_port, default=8080,
                   help="data-plane port (default 8080; 0: any free one)")
    d.add_argument("--admin-port", type=_port, default=8081,
                   help="admin port (default 8081; 0: any free one)")
    d.set_defaults(fn=_cmd_demo)

    from gateway.cli.admin import add_client_commands

    add_client_commands(sub)
    from gateway.cli.drill import add_drill_commands

    add_drill_commands(sub, common_options)
    from gateway.cli.shadow import add_shadow_commands

    add_shadow_commands(sub, common_options)
    from gateway.cli.helptext import describe

    describe(sub)
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
    if args.command == "serve" and args.config is None:
        words = [w for w in extra if not w.startswith("-")]
        _innermost(parser, args).error(
            "the following arguments are required: -c/--config"
            + (f" (the config file is given with -c: killgate serve -c {shlex.quote(words[0])})"
               if words else ""))
    if not extra:
        return args
    if args.command in _ROUTE_COMMANDS and not any(w.startswith("-") for w in extra):
        args.more = extra  # (positional words argparse left over: cli/writes.py orders them)
        return args
    _innermost(parser, args).error(  # (exits 2)
        "unrecognized arguments: " + " ".join(extra) + _hint(args, extra))
    raise AssertionError  # unreachable


def _innermost(parser: argparse.ArgumentParser,
               args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand's parser `args` names (`drill kill`, `shadow report`)."""
    inner = parser
    while True:
        subs = [a for a in inner._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return inner
        inner = subs[0].choices[name]


def _hint(args: argparse.Namespace, extra: list[str]) -> str:
    """What to type instead, for the wrong words a new user types most (review: `killgate
    kill iris --reason ...` at 3 a.m., as `rollback iris` takes it, said only
    "unrecognized arguments: iris"; `check -c FILE`, as `serve -c FILE` takes it)."""
    words = [w for w in extra if not w.startswith("-")]
    if args.command in ("kill", "unkill") and words == extra and not args.all:
        route, version = args.route, args.version
        if route is None and len(words) <= 2:
            route, version = words[0], (words[1] if len(words) == 2 else version)
        elif route is not None and version is None and len(words) == 1:
            version = words[0]
        else:
            return ""
        target = f"--route {shlex.quote(route)}" + (
            f" --version {shlex.quote(version)}" if version is not None else "")
        return (f" (the route and version are options of {args.command}: killgate "
                f"{args.command} {target} --reason TEXT)")
    if args.command == "check" and extra == ["-c"]:
        return (" (check takes the files alone: killgate check "
                + " ".join(shlex.quote(f) for f in args.file) + ")")
    return ""


def max_workers() -> int:
    """The most `serve --workers` takes: 4 per CPU, at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))


def _main(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if not words:
        # (bare `killgate`, a new user's first try: the commands, not argparse's "the
        # following arguments are required: COMMAND" under a usage line that lists none)
        build_parser().print_help(sys.stderr)
        return 2
    try:
        args = _parse(build_parser(words[0] if words[0] in LEAN else None), argv)
    except SystemExit as exc:
        # `diff` exits 2 when the file would change something: a mistyped option must not
        # read as that in a pipeline (argparse's usage errors exit 2); it is an error, 1
        if exc.code == 2 and _command(words) == "diff":
            raise SystemExit(1) from None
        raise
    if args.command == "serve" and args.workers < 1:
        print("killgate: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.command == "serve" and args.workers > (most := max_workers()):
        # (a typo, `--workers 40` for 4, forked 40 processes of ~70 MiB on a 2-core host,
        # each one more instance every receipt waits for: refused before anything starts)
        print(f"killgate: --workers {args.workers} is more than {most}, 4 per CPU of this "
              f"machine ({os.cpu_count() or 1}): each worker is a process (about 70 MiB, its "
              "own connections to the store, an instance every receipt waits for); one per "
              "CPU is the usual number", file=sys.stderr)
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
