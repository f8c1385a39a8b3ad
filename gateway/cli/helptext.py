"""What each command's `--help` says above and below its options: the one line the command
list gives it (`killgate kill --help` began straight at `usage:`, never saying what the
command does) and, for the commands an operator types in an incident or a first hour,
examples to copy (found by the new-user review revnewuser7: `--help` had none, the README
is 3,600 lines away)."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

__all__ = ["EXAMPLES", "describe"]

#: examples per command, as README's Quick start and incident runbook type them
EXAMPLES: dict[str, tuple[str, ...]] = {
    "serve": ("killgate check killgate.yaml && killgate serve -c killgate.yaml",
              "killgate serve -c killgate.yaml --workers 4"),
    "check": ("killgate check killgate.yaml", "killgate check config/*.yaml"),
    "demo": ("killgate demo", "killgate demo --port 0 --admin-port 0"),
    "status": ("killgate status",
               "killgate --admin http://gateway-admin:8081 status --json"),
    "kill": ('killgate kill --route iris --version v2 --reason "INC-123: v2 returns garbage"',
             'killgate kill --route iris --reason "INC-123: every version of iris"',
             'killgate kill --global --reason "INC-123: stop everything"',
             'killgate kill --local --route iris --version v2 --reason "INC-123" '
             "  # the store is down"),
    "unkill": ('killgate unkill --route iris --version v2 --reason "INC-123: v2.1 deployed"',),
    "rollback": ('killgate rollback iris --reason "INC-123: back to the last good"',
                 'killgate rollback iris --to v1 --reason "INC-123"'),
    "promote": ('killgate promote iris v2 --reason "canary looked good"',),
    "weights": ('killgate weights iris v1=90 v2=10 --reason "canary at 10%"',
                'killgate weights iris v1=100 --reason "INC-123: v2 off"'),
    "release": ('killgate release iris --reason "INC-123 over: the file governs again"',),
    "audit": ("killgate audit --limit 50          # who did what, newest first",
              "killgate audit verify -c killgate.yaml   # the chain, MACs with the fleet's key",
              "killgate audit verify --mirror var/audit-mirror.jsonl"),
    "diff": ("killgate diff killgate.yaml", "killgate diff new.yaml --against killgate.yaml"),
    "token": ("export KILLGATE_TOKEN=$(killgate token -c killgate.yaml --subject alice "
              "--scope killgate:admin --ttl 8h)",
              'killgate token -c killgate.yaml --subject grafana --scope killgate:read'),
    "approvals": ("killgate approvals",),
    "approve": ('killgate approve ID --reason "looked at it"',),
    "drill kill": ("killgate drill kill --route iris-drill --version v2",
                   'killgate drill kill --route iris-drill --version v2 --hold 3s '
                   '--reason "monthly kill drill"'),
    "drill rollback": ('killgate drill rollback --route iris-drill --to v1 --hold 3s '
                       '--reason "monthly rollback drill"',),
    "drill failover": ('killgate drill failover --route iris-drill --version v2 '
                       '--reason "monthly failover drill"',),
    "drill store-loss": ("killgate drill store-loss --route iris-drill --version v2 --hold 2s "
                         "--store redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0"
                         "   # the fleet's state.url",),
    "drill run": ("killgate drill run plan.yaml   # README: Plans, targets and abort conditions",),
    "drill history": ("killgate drill history",),
    "drill restore": ("killgate drill restore ID   # an interrupted drill's id (drill history)",),
    "shadow report": ("killgate shadow report chat",),
}


#: what a drill's exit status means (README's Commands table), for a cron job or CI step
#: that runs one: its --help said nothing of it
DRILL_EXIT = ("exit status: 0 passed, 1 failed (also an error: an unknown route, the admin "
              "API unreachable), 2 aborted (also bad arguments or a bad plan, refused before "
              "anything is touched), 3 skipped (could not run here); in cron or CI, alert on "
              "any but 0")
DRILL_KINDS = frozenset({"kill", "rollback", "failover", "store-loss", "run"})


def describe(sub: Any, prefix: str = "") -> None:
    """Give every subcommand of `sub` (argparse's subparsers action), and theirs (`drill
    kill`), its line of the command list as its description, and its examples."""
    lines = {a.dest: a.help for a in sub._choices_actions}
    for name, parser in sub.choices.items():
        said = lines.get(name)
        if said and not parser.description:
            parser.description = str(said).replace("%%", "%")
        examples = EXAMPLES.get(prefix + name)
        if examples and not parser.epilog:
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
            parser.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
        if prefix == "drill " and name in DRILL_KINDS:
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
            parser.epilog = f"{parser.epilog or ''}\n\n{textwrap.fill(DRILL_EXIT, 78)}".strip()
        for inner in parser._actions:
            if isinstance(inner, argparse._SubParsersAction):
                describe(inner, f"{prefix}{name} ")
