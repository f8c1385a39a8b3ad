"""`killgate shadow report ROUTE`: a route's shadow results (CONTRACT §1, §5.5).

Owns the command's arguments and its human-readable summary and disagreement table;
`--json` prints the API's answer (GET /v1/routes/{route}/shadow) as it came. Calls the
admin API through the admin client's helpers (gateway/cli/client.py). Exit 0 when the
report was read, 1 on any error (with the API's message).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.client import ClientError, api, quote, run, table
from gateway.cli.shadowcells import value_at
from gateway.domain.audit import clean_text

__all__ = ["add_shadow_commands", "render"]


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, int | float) else "-"


def _ms(lat: dict[str, Any]) -> str:
    def one(v: Any) -> str:
        return "-" if v is None else ">=30000" if v >= 30000 else f"{v:g}"

    return f"{one(lat.get('p50'))}/{one(lat.get('p99'))}"


def _short(v: Any, width: int = 60) -> str:
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return text if len(text) <= width else text[:width - 1] + "…"


def _answer(a: Any, path: Any = None) -> str:
    """A kept answer's cell: its status and its value at the first difference's path
    (`data=["setosa"]`), else the start of its body."""
    if not isinstance(a, dict):
        return _short(a, 40)
    found, value = value_at(a.get("body"), path)
    if found:
        return f"{a.get('status')} {str(path).rsplit('.', 1)[-1]}={_short(value, 40)}"
    return f"{a.get('status')} {_short(a.get('body'), 40)}"


def render(rep: dict[str, Any]) -> str:
    """The report as a person reads it."""
    lines = [f"route {rep.get('route')}  shadow {rep.get('version')}  compare "
             f"{rep.get('compare')}  sample {_pct(rep.get('sample'))}  instances "
             f"{rep.get('instances')}"]
    o = rep.get("outcomes") or {}
    lines.append(f"agreement {_pct(rep.get('agreement'))} ({rep.get('agreed')} of "
                 f"{rep.get('compared')} compared; {o.get('noise', 0)} of them within the "
                 f"noise floor, {rep.get('agreed_excusing_answer', 0)} only by excusing the "
                 f"answer itself; {o.get('uncomparable', 0)} uncomparable)")
    copies = rep.get("copies") or {}
    lines.append("copies: " + ", ".join(f"{k} {v}" for k, v in copies.items()))
    if rep.get("failures"):
        lines.append("failures: " + ", ".join(f"{k} {v}" for k, v in rep["failures"].items()))
    lat = rep.get("latency_ms") or {}
    lines.append(f"latency p50/p99 ms: primary {_ms(lat.get('primary') or {})}  shadow "
                 f"{_ms(lat.get('shadow') or {})}")
    if rep.get("differences"):
        lines.append("differences: " + ", ".join(f"{k} {v}" for k, v in
                                                 rep["differences"].items()))
    noise = rep.get("noise") or {}
    if noise.get("pairs"):
        lines.append(f"noise floor: {noise['pairs']} pair(s); the primary disagreed with "
                     "itself on " + (", ".join(f"{k} ({v})" for k, v in noise["paths"].items())
                                     or "nothing"))
    gate = rep.get("gate")
    if gate:
        others = gate.get("other_status")
        older = gate.get("older_instances")
        seen = (f" ({_pct(gate.get('agreement'))} agreed of {gate.get('compared')} counted, "
                f"{gate.get('failures')} of them copies the shadow failed"
                + (", only requests the primary answered 2xx" if others is not None else "")
                + (f"; {others} compared with another status of the primary's not counted"
                   if others else "")
                + (f"; {older} compared by instances of an older version not counted"
                   if older else "") + ")"
                if "failures" in gate else "")
        lines.append(f"gate: open{seen}" if gate.get("open") else
                     f"gate: CLOSED: {gate.get('reason')}")
    # what the store holds may come from anyone who can write to it: escaped, like cells
    lines = [clean_text(line, 4096) for line in lines]
    ds = rep.get("disagreements") or []
    if ds:
        rows = [["time", "differences", "request", "primary", "shadow"]]
        for d in ds:
            # (a record is what the store held: another version's, or anyone's who can
            # write there; parts of other shapes are shown as they are, never a traceback)
            d = d if isinstance(d, dict) else {"request": d}
            found = d.get("differences") or []
            diffs = ", ".join(f"{x.get('kind')} {x.get('path')}" if isinstance(x, dict)
                              else _short(x) for x in
                              (found if isinstance(found, list) else [found]))
            first = next((x.get("path") for x in (found if isinstance(found, list) else [])
                          if isinstance(x, dict)), None)
            rows.append([str(d.get("time", "")), _short(diffs, 40), _short(d.get("request")),
                         _answer(d.get("primary"), first), _answer(d.get("shadow"), first)])
        lines += ["", "DISAGREEMENTS (newest first)", table(rows)]
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 100:
        raise ClientError("--limit must be from 1 to 100")
    rep = api(args, "GET", f"/v1/routes/{quote(args.route)}/shadow?limit={args.limit}")
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    try:  # (a field of another type is the answer's fault, named, never a traceback)
        text = render(rep)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ClientError(f"unexpected answer from the admin API ({type(exc).__name__}: "
                          f"{str(exc)[:80]})") from None
    print(text)
    return 0


def add_shadow_commands(sub: Any, common: Any) -> None:
    p = sub.add_parser("shadow", help="shadow traffic: how often the shadow agrees "
                                      "('shadow report ROUTE')")
    common(p)  # (--admin, --token, --json also between `shadow` and its command)
    inner = p.add_subparsers(dest="shadow_command", required=True, metavar="COMMAND")
    r = inner.add_parser("report", help="a route's comparison results and sampled "
                                        "disagreements")
    common(r)
    r.add_argument("route", help="route name (one with routes[].shadow)")
    r.add_argument("--limit", type=int, default=10, help="disagreements shown (1-100)")
    r.set_defaults(fn=run(_report))
