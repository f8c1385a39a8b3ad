"""`killgate audit verify`: check an audit trail's links, hashes, MACs and anchored head.

Owns reading the keys the check may use (`--key-env VAR`, `--key-file FILE`, the audit
keys of `-c FILE`, else $KILLGATE_AUDIT_KEY / $KILLGATE_STATE_KEY), reading a mirror file
(`--mirror FILE`, checked on its own), and the report, which always says what could be
checked: links and hashes (anyone), MACs (only with a key), the anchored head (only what
the API names). Exit 0 when intact, 1 at the first break (named).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.domain.audit import clean_text, parse_event
from gateway.domain.auditverify import TrailReport, verify_trail
from gateway.errors import ConfigError, Problem

__all__ = ["add_verify_arguments", "verify"]

DEFAULT_KEY_ENVS = ("KILLGATE_AUDIT_KEY", "KILLGATE_STATE_KEY")

Fetch = Callable[[argparse.Namespace], tuple[list[dict[str, Any]], str | None]]


class VerifyError(Exception):
    pass


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mirror", metavar="FILE",
                   help="verify: check this audit mirror file on its own (no API call)")
    p.add_argument("-c", "--config", metavar="FILE", dest="key_config",
                   help="verify: take the audit keys from this config file")
    p.add_argument("--key-env", action="append", default=[], metavar="VAR",
                   help="verify: an environment variable holding an audit key (repeatable)")
    p.add_argument("--key-file", action="append", default=[], metavar="FILE",
                   help="verify: a file holding an audit key (repeatable)")
    p.add_argument("--strict", action="store_true",
                   help="verify: exit 3 when an intact trail could not be checked whole "
                        "(no audit key for the MACs; no anchored head from the gateway)")


def _keys(args: argparse.Namespace) -> tuple[dict[str, bytes], str]:
    """Key id → secret, and where they came from."""
    from gateway.state.signing import read_keys

    problems: list[Problem] = []
    found = []
    for var in args.key_env:
        found.append(read_keys(var, None, f"--key-env {var}", Path, problems, exact=True))
    for f in args.key_file:
        found.append(read_keys(None, f, f"--key-file {f}", Path, problems, exact=True))
    source = "the keys given"
    if args.key_config:
        from gateway.configfile import load_config
        from gateway.state.signing import audit_keyring, signing_keyring

        loaded = load_config(args.key_config)
        cfg = loaded.config.state
        ring = audit_keyring(cfg, loaded.resolve, signing_keyring(cfg, loaded.resolve))
        found += [ring.current, ring.previous]
        source = f"the audit keys of {args.key_config}"
    elif not found:
        for var in DEFAULT_KEY_ENVS:
            if os.environ.get(var):
                found.append(read_keys(var, None, f"${var}", Path, problems, exact=True))
                source = f"${var}"
                break
    if problems:
        raise ConfigError(problems)
    keys = {k.kid: k.secret for k in found if k is not None}
    if not keys and args.key_config:
        return keys, f"{args.key_config} names no audit or signing key that is set"
    return keys, source if keys else "none"


def read_mirror(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise VerifyError(f"cannot read {path}: {exc.strerror or exc}") from None
    events = []
    for n, line in enumerate(lines, 1):
        ev = parse_event(line)
        events.append(ev if ev is not None else {
            "id": f"line-{n}", "unparseable": line[:200].decode("utf-8", "replace")})
    return events


def _describe(r: TrailReport, keys: dict[str, bytes], source: str, head: str | None,
              what: str) -> list[str]:
    out = [f"links and hashes checked: {r.hashes} of {r.events}"]
    if r.trimmed is not None and r.brk is None:  # (a broken trail's checkpoint may be forged)
        t = r.trimmed
        out.append(clean_text(
            f"starts at a trim checkpoint: {t.get('removed')} older event(s) (from "
            f"{t.get('from')} to {t.get('to')}) were removed by retention (checkpoint "
            f"{t.get('checkpoint')}, {t.get('time')}); the mirror or a backup holds them"
            + (f"; before them the store had lost its trail (re-seeded after event "
               f"{str(t['lost_before'])[:16]}…)" if t.get("lost_before") else ""), 640))
    if not r.keyed:
        why = ("give -c FILE, --key-env VAR or --key-file FILE, or set $KILLGATE_AUDIT_KEY"
               if source == "none" else source)
        out.append(f"MACs NOT checked: no audit key ({why}): without one, a chain "
                   "re-sealed by someone with write access to the store passes this check")
    else:
        out.append(f"MACs checked: {r.macs} (key id(s) {', '.join(sorted(keys))} from "
                   f"{source}); without a MAC we could check: {r.unkeyed}")
    if what == "chain":
        out.append("anchored head: " + ("present in the trail" if head and r.brk is None
                                        else "checked" if head else
                                        "none named by the gateway (events cut off the end "
                                        "could not be detected)"))
    else:  # (a file anyone who can write it may have cut short: nothing anchors its end)
        out.append("end of file: not anchored (events cut off its end cannot be detected "
                   "here: its last hash should be the store's head, which `killgate audit "
                   "verify` checks)" + (": the file holds no event" if not r.events else ""))
    return out


def _other_key(events: list[dict[str, Any]], keys: dict[str, bytes]) -> str:
    """When no event with a MAC names a key given here: most likely the wrong key was given
    (a break it causes is not proof of tampering); said first, naming both key ids."""
    sealed = {str(ev.get("kid")) for ev in events
              if isinstance(ev.get("mac"), str) and isinstance(ev.get("kid"), str)}
    if not keys or not sealed or sealed & set(keys):
        return ""
    return (f"the trail's MACs name key id(s) {', '.join(sorted(sealed))}, and the key(s) "
            f"given here have id(s) {', '.join(sorted(keys))}: check with the fleet's key "
            "before reading what follows as tampering")


def _failed(args: argparse.Namespace, lines: list[str]) -> int:
    """Exit 1 before any check: the lines on stderr, and with --json as an error object."""
    for line in lines:
        print(f"killgate: {line}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": {"message": "; ".join(lines), "exit": 1}}, indent=2))
    return 1


def _for_verify(p: Problem) -> str:
    """A key problem as `audit verify` must put it: the serve-side advice (make a key with
    `openssl rand`) would give a key the trail was never sealed with, and every MAC would
    then fail: the trail would read BROKEN for want of the right key."""
    if "is not set" not in p.message or "environment variable" not in p.message:
        return str(p)
    name = p.message.split("environment variable ", 1)[1].split(" ", 1)[0]
    return (f"{p.path}: the environment variable {name} is not set: set it to the key the "
            "fleet runs with (the instances' value), or give --key-file FILE; not a new key: "
            "the trail's MACs would not verify with it")


#: how many times the trail is read again while its start reads as broken and its head moves
READS_AGAIN = 5


def verify(args: argparse.Namespace, fetch: Fetch) -> int:
    """Run the check; `fetch` reads every event (oldest first) and the anchored head."""
    try:
        keys, source = _keys(args)
        if args.mirror:
            events, head, what = read_mirror(Path(args.mirror)), None, "mirror"
        else:
            (events, head), what = fetch(args), "chain"
    except ConfigError as exc:
        return _failed(args, [_for_verify(p) for p in exc.problems])
    except VerifyError as exc:
        return _failed(args, [str(exc)])
    # (past a loss at its start the trail is checked on: an edit after it is not hidden)
    r = verify_trail(events, head, keys, any_checkpoint=what == "mirror", past_loss=True)
    for _ in range(READS_AGAIN):
        start_broken = (r.lost is not None and r.lost.index == 0) or (
            r.brk is not None and r.brk.index == 0)
        if not start_broken or what != "chain":
            break
        # a trim that landed while the pages were read moved the trail's start past its
        # oldest page, and its checkpoint is newer than the newest page: read it again,
        # as long as the head moved meanwhile (a look trims batch after batch on a long
        # trail: once was not enough); a start that stays broken while nothing is written
        # is a break
        was = head
        events, head = fetch(args)
        r = verify_trail(events, head, keys, past_loss=True)
        if head == was:
            break
    brk = r.brk
    if getattr(args, "json", False):
        print(json.dumps({
            "source": args.mirror or "store", "events": r.events, "ok": brk is None,
            "hashes_checked": r.hashes, "macs_checked": r.macs, "unkeyed": r.unkeyed,
            "keys": sorted(keys), "anchored_head": head,
            "trimmed": r.trimmed if brk is None else None,
            "unchecked": _unchecked(r, head, what),
            "break": None if brk is None else {"index": brk.index, "id": brk.event_id,
                                                "problem": brk.problem},
            "lost": None if r.lost is None else {"index": r.lost.index, "id": r.lost.event_id,
                                                 "problem": r.lost.problem}}))
    else:
        detail = "; ".join(_describe(r, keys, source, head, what))
        if brk is None:
            print(f"audit {what} ok: {r.events} event(s); {detail}")
        else:
            wrong = _other_key(events, keys)
            if wrong:
                print(f"killgate: {wrong}", file=sys.stderr)
            # (escaped: the id and the text quoted from the event are whoever forged it's
            # choice, and a carriage return or an escape sequence would overwrite this line)
            print(f"audit {what} BROKEN at event #{brk.index} (id "
                  f"{clean_text(str(brk.event_id), 128)}): {clean_text(brk.problem, 2048)}"
                  f"{_after_loss(r)}\n({detail})", file=sys.stderr)
    if brk is not None:
        return 1
    unchecked = _unchecked(r, head, what)
    if unchecked and getattr(args, "strict", False):
        print(f"killgate: --strict: not every check could be made: {'; '.join(unchecked)}",
              file=sys.stderr)
        return 3
    return 0


def _after_loss(r: TrailReport) -> str:
    """What the check found past a loss (the trail's start, or a re-seed after a backup
    put back): the events after it intact (the loss is the only break), or the loss, said
    after the break found past it."""
    if r.lost is None:
        return ""
    if r.brk is r.lost:
        return (f"; the {r.events - r.lost.index - 1} event(s) after it intact (links and "
                "hashes" + (", MACs" if r.keyed and r.macs == r.events else "") + ")")
    return (f"\n(before it, at event #{r.lost.index} (id {clean_text(str(r.lost.event_id), 128)}): "
            f"{clean_text(r.lost.problem, 2048)})")


def _unchecked(r: TrailReport, head: str | None, what: str) -> list[str]:
    """What an intact trail could not be checked for (what --strict refuses)."""
    out = []
    if not r.keyed:  # (with a key, a newest event without a MAC under it is a break)
        out.append("MACs not checked (no audit key)")
    if what == "chain" and not head and r.events:
        out.append("no anchored head (events cut off the end would not be seen)")
    if what == "mirror" and not r.events:  # (a mirror cut to nothing: nothing was checked)
        out.append("the mirror holds no event (its end is not anchored: one cut to nothing "
                   "cannot be told from one never written)")
    return out
