"""`killgate drill ...` (CONTRACT §5.4): the commands' arguments, and running a drill.

Owns the drill commands' arguments, a drill run's output (a Markdown summary, or `--json`;
the report, summary and picture written under `--out`) and exit codes: 0 passed, 1 failed
(or an error), 2 aborted, 3 skipped. Ctrl-C, SIGTERM and SIGHUP (a terminal gone) stop a
running drill, which then restores before it exits. The drill itself runs in
`gateway.control.drills`; `restore` and `history` live in `cli.drillpast`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from gateway.cli import drillpast
from gateway.cli.client import duration_arg
from gateway.cli.drillpast import client, failed, say
from gateway.cli.http import ClientError
from gateway.control.drillload import DrillApiError
from gateway.control.drills import DrillRunner
from gateway.domain.drillplan import MEASURE, Plan, parse_plan, plan_from
from gateway.domain.drillsummary import markdown
from gateway.errors import ConfigError, StateError

__all__ = ["add_drill_commands"]

EXIT = {"passed": 0, "failed": 1, "aborted": 2, "skipped": 3}
#: the signals that stop a running drill, which then restores before it exits
STOPS = ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP"))


def _plan_from_args(kind: str, args: argparse.Namespace) -> Plan:
    data: dict[str, Any] = {"kind": kind, "route": args.route}
    for name in ("version", "scope", "to", "store", "reason"):
        if getattr(args, name, None) is not None:
            data[name] = getattr(args, name)
    for name in ("hold", "steady", "settle"):
        data[name] = getattr(args, name)
    data["rate"] = args.rate
    data["production"] = args.production
    if args.instances:
        data["instances"] = [u.strip().rstrip("/") for u in args.instances.split(",") if u.strip()]
    if args.max_leaks is not None or args.max_errors is not None or args.target_ms is not None:
        targets: dict[str, Any] = {}
        if args.max_leaks is not None:
            targets["leaks"] = args.max_leaks
        if args.max_errors is not None:
            targets["errors"] = args.max_errors
        if args.target_ms is not None:
            targets[MEASURE[kind]] = {"max": args.target_ms}
        data["targets"] = targets
    if args.abort_error_rate is not None:
        data["abort"] = {"error_rate": args.abort_error_rate}
    return plan_from(data)


async def _drive(plan: Plan, args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    pause = check = None
    if plan.store:
        from gateway.state.pause import check_store, pause_store

        store = plan.store

        async def pause(seconds: float) -> None:
            await pause_store(store, seconds)

        async def check(prefix: str, instances: list[str]) -> str | None:
            return await check_store(store, prefix, instances, hold=plan.hold)

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=128)
    async with aiohttp.ClientSession(connector=connector) as session:
        runner = DrillRunner(plan, session, client(args, session), say, pause, check)
        loop = asyncio.get_running_loop()
        # (SIGHUP: the terminal went away, an SSH session dropped; left to its default, it
        # ended the drill process with the drill's change in force. Under nohup, ignored
        # as asked: the drill runs on)
        stops = [(sig, name) for sig, name in STOPS
                 if sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN]
        for sig, name in stops:
            loop.add_signal_handler(sig, runner.stop, f"interrupted ({name})")
        try:
            report = await runner.run()
        finally:
            for sig, _ in stops:
                loop.remove_signal_handler(sig)
        return report, runner.obs


def _write(report: dict[str, Any], obs: list[Any], out: Path, picture: str) -> list[Path]:
    if not report.get("id"):
        return []
    out.mkdir(parents=True, exist_ok=True)
    base = out / str(report["id"])
    paths = [base.with_suffix(".json"), base.with_suffix(".md")]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown(report))
    from gateway.cli.drillplot import timeline

    pic = timeline(report, obs, base.with_suffix("." + picture))
    if pic is None:
        # (this interpreter's own pip: another one cannot find killgate, or finds another)
        say("no timeline picture: install the extra with killgate's own pip "
            f"({shlex.quote(sys.executable)} -m pip install 'killgate[drills]')")
    else:
        paths.append(pic)
    return paths


def _run_plan(plan: Plan, args: argparse.Namespace) -> int:
    try:
        report, obs = asyncio.run(_drive(plan, args))
    except (DrillApiError, ClientError) as exc:  # (ClientError: a token that cannot be sent)
        return failed(args, 1, [str(exc)])
    except StateError as exc:
        return failed(args, 1, [f"the store could not be paused: {exc}"])
    try:
        for p in _write(report, obs, Path(args.out), args.picture):
            say(f"wrote {p}")
    except OSError as exc:  # (a read-only folder: the report still goes to stdout)
        say(f"cannot write the report files under {args.out}: {exc.strerror}")
    with contextlib.suppress(OSError):  # (a terminal that hung up: the exit code says it)
        print(json.dumps(report, indent=2) if args.json else markdown(report), end="" if not
              args.json else "\n", flush=True)
    return EXIT[report["verdict"]]


def _cmd_kind(kind: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            plan = _plan_from_args(kind, args)
        except ConfigError as exc:
            return failed(args, 2, [str(p) for p in exc.problems])
        return _run_plan(plan, args)

    return run


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        text = Path(args.plan).read_text()
        plan = parse_plan(text, args.plan)
    except OSError as exc:
        return failed(args, 2, [f"{args.plan}: {exc.strerror}"])
    except ConfigError as exc:
        return failed(args, 2, [str(p) for p in exc.problems], f"{args.plan}: ")
    return _run_plan(plan, args)


def _limit(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        n = 0
    if not 1 <= n <= 200:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number from 1 to 200")
    return n



class _Says(argparse.Action):
    """An option a command does not take but users reach for: refused with what to use."""

    def __init__(self, *args: Any, says: str = "", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.says = says

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error(self.says)

def add_drill_commands(sub: Any, common: Any) -> None:
    d = sub.add_parser("drill", help="rehearse a kill, rollback, failover or store loss")
    common(d)  # (--admin, --token, --json also between `drill` and its command)
    ds = d.add_subparsers(dest="drill_command", required=True, metavar="KIND")

    def kind(name: str, kind_: str, help_: str) -> argparse.ArgumentParser:
        p = ds.add_parser(name, help=help_)
        common(p)
        p.add_argument("--route", required=True, help="the route to drill on")
        p.add_argument("--rate", type=float, default=50, help="requests/s per instance (50)")
        p.add_argument("--hold", type=duration_arg, default="5s", help="measure for (5s)")
        p.add_argument("--steady", type=duration_arg, default="1s",
                       help="steady-state window before the injection (1s)")
        p.add_argument("--settle", type=duration_arg, default="2s",
                       help="measure the restore for (2s)")
        p.add_argument("--instances", metavar="URL,...",
                       help="data-plane URLs (default: what the instances publish)")
        p.add_argument("--production", action="store_true",
                       help="allow a route users are served by (not a drill route)")
        p.add_argument("--reason", help="recorded in the audit trail")
        p.add_argument("--max-leaks", type=int, help="target (default 0)")
        p.add_argument("--max-errors", type=int, help="target (default 0)")
        p.add_argument("--target-ms", type=float, help="target for the slowest instance (2000)")
        p.add_argument("--abort-error-rate", type=float,
                       help="stop when users' error rate passes this (0.05)")
        _outputs(p)
        p.set_defaults(fn=_cmd_kind(kind_))
        return p

    p = kind("kill", "kill", "kill a version (or --scope route/global), measure, unkill")
    p.add_argument("--version", help="the version to kill")
    p.add_argument("--scope", choices=["version", "route", "global"],
                   help="what is killed (default: version with --version, else route)")
    p = kind("rollback", "rollback", "roll back to the previous known-good, measure, restore")
    p.add_argument("--to", help="version to roll back to")
    p.add_argument("--version", action=_Says, nargs="?", help=argparse.SUPPRESS,
                   says="a rollback drill names the version it rolls back to with --to VERSION"
                        " (--version is the other kinds')")
    p = kind("failover", "failover", "make --version fail for drill requests only, measure")
    p.add_argument("--version", required=True, help="the version made to fail")
    p = kind("store-loss", "store_loss",
             "kill --version, make the state store unreachable, check it stays killed")
    p.add_argument("--version", help="the version to kill")
    p.add_argument("--scope", choices=["version", "route"],
                   help="what is killed (default: version with --version, else route)")
    p.add_argument("--store", metavar="URL",
                   help="the redis the drill may pause: the fleet's state.url (behind "
                        "Sentinel its redis+sentinel:// URL: a --hold of half the "
                        "sentinels' down-after-milliseconds or more is skipped)")
    r = ds.add_parser("run", help="run a drill plan (YAML)")
    common(r)
    r.add_argument("plan", metavar="PLAN.yaml", help="the plan (README: Recovery drills)")
    _outputs(r)
    r.set_defaults(fn=_cmd_run)
    s = ds.add_parser("restore", help="undo what an interrupted drill changed, and close it")
    common(s)
    s.add_argument("id", metavar="ID", help="the drill's id (killgate drill history)")
    s.add_argument("--reason", help="why (recorded in the audit trail)")
    s.set_defaults(fn=lambda a: asyncio.run(drillpast.restore(a)))
    h = ds.add_parser("history", help="past drills, open ones, and the trend")
    common(h)
    h.add_argument("--limit", type=_limit, default=20, metavar="N",
                   help="past drills shown, 1-200 (20)")
    h.set_defaults(fn=lambda a: asyncio.run(drillpast.history(a)))


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="killgate-drills", metavar="DIR",
                   help="where the report (.json, .md) and picture go (killgate-drills/)")
    p.add_argument("--picture", choices=["svg", "png"], default="svg",
                   help="the picture's format (svg; needs killgate[drills])")
