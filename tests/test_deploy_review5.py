"""What a new user and a platform team meet first, read as an attacker would (deploy review 5).

Static checks that tests/test_deploy_review.py, tests/test_deploy_review3.py and
tests/test_deploy_monitoring.py do not make: the documented container run, and the label
names the shipped rules and dashboard use (the names of the series were checked there)."""

from __future__ import annotations

import ast
import ipaddress
import itertools
import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.telemetry.metricnames import HELP, INITIAL
from tests.conftest import ROOT
from tests.test_deploy_review import _container_run_command


def test_the_documented_container_run_keeps_the_admin_port_off_the_network() -> None:
    """README "Container image" published the admin port as `-p 8081:8081`: podman and
    docker then listen on every address of the host (docker past the host's firewall too),
    so the admin API (kill, unkill, rollback; /metrics, /readyz and the console without a
    token) answered anyone who reached the host, while the README says never to put it
    where untrusted clients reach it. Only the data port may be published on every
    address; the admin port on a loopback address."""
    from gateway.configfile import load_config

    args = _container_run_command()
    mounts = dict(reversed(v.split(":")[:2]) for f, v in itertools.pairwise(args) if f == "-v")
    cfg = load_config(Path(mounts["/etc/killgate/config.yaml"].replace("$PWD", str(ROOT)))).config
    admin_port = int(cfg.admin.listen.rsplit(":", 1)[1])
    published = [v for f, v in itertools.pairwise(args) if f in ("-p", "--publish")]
    admin = [v for v in published if int(v.rsplit(":", 1)[1]) == admin_port]
    assert admin, published  # (the README shows how to reach it from the host)
    for value in admin:
        parts = value.split(":")
        assert len(parts) == 3, f"-p {value} publishes the admin API on every host address"
        assert ipaddress.ip_address(parts[0].strip("[]")).is_loopback, value


# ---------------------------------------------------------------- label names in deploy/

_SCRAPE = frozenset({"job", "namespace", "instance"})  # (added by Prometheus's scrape)


def _literal(node: Any, bound: dict[str, Any]) -> tuple[str, ...] | None:
    if isinstance(node, ast.Name) and node.id in bound:
        node = bound[node.id]
    if isinstance(node, (ast.Tuple, ast.List)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return tuple(e.value for e in node.elts)
    return None


def _rows(tree: ast.AST, bound: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """`Rows(name, kind, help, labels, rows)` calls: the series' name a literal, a name bound
    to one, or the loop variable of a `for name, ... in (("killgate_x", ...), ...)` around
    the call; the labels a literal or a name bound to one."""
    loops: dict[int, list[str]] = {}  # id of a Rows call → the names its loop gives it
    for f in ast.walk(tree):
        if isinstance(f, ast.For) and isinstance(f.target, ast.Tuple) and f.target.elts \
                and isinstance(var := f.target.elts[0], ast.Name) \
                and isinstance(f.iter, (ast.Tuple, ast.List)):
            names = [e.elts[0].value for e in f.iter.elts if isinstance(e, ast.Tuple)
                     and e.elts and isinstance(e.elts[0], ast.Constant)]
            for c in ast.walk(f):
                if isinstance(c, ast.Call) and c.args and isinstance(c.args[0], ast.Name) \
                        and c.args[0].id == var.id:
                    loops[id(c)] = [str(x) for x in names]
    out: list[tuple[str, tuple[str, ...]]] = []
    for c in ast.walk(tree):
        if not (isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Rows"
                and len(c.args) >= 4 and (labels := _literal(c.args[3], bound)) is not None):
            continue
        first = c.args[0]
        if isinstance(first, ast.Name) and isinstance(bound.get(first.id), ast.Constant):
            first = bound[first.id]
        if isinstance(first, ast.Constant) and str(first.value).startswith("killgate_"):
            out.append((str(first.value), labels))
        out.extend((n, labels) for n in loops.get(id(c), []) if n.startswith("killgate_"))
    return out


def _exported_labels() -> dict[str, set[str]]:
    """Each `killgate_*` series' label names, as gateway/ passes them where it counts or
    builds the series (a literal there, or a name bound to one in the same file); a series
    whose names are not literal there is left out (not checked)."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / "gateway").rglob("*.py"):
        text = path.read_text()
        if '"killgate_' not in text:
            continue
        tree = ast.parse(text)
        bound = {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name)}
        for name, labels in _rows(tree, bound):  # (series written as rows: /metrics's own
            out.setdefault(name, set()).update(labels)  # writer, telemetry/exposition.py)
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)
                    and str(n.args[0].value).startswith("killgate_")):
                continue
            fn = getattr(n.func, "attr", getattr(n.func, "id", ""))
            kw = {k.arg: k.value for k in n.keywords}
            where = kw.get("label_names", kw.get("labels"))
            if where is None:
                where = {"set": 3, "inc": 4, "_histogram": 1}.get(fn)
                where = n.args[where] if where is not None and len(n.args) > where else None
            if where is None and fn in ("inc", "set") and len(n.args) <= (2 if fn == "set" else 1):
                out.setdefault(n.args[0].value, set())
            elif (names := _literal(where, bound)) is not None:
                out.setdefault(n.args[0].value, set()).update(names)
    for name, (names, _) in INITIAL.items():
        out.setdefault(name, set()).update(names)
    for name, kind in list(HELP.items()):
        if kind[0] == "histogram" and name in out:
            out[name + "_bucket"] = out[name] | {"le"}
            out[name + "_sum"] = out[name + "_count"] = out[name]
    return out


_SELECTOR = re.compile(r"\b(killgate[_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def _label_problems(expr: str, known: dict[str, set[str]], shown: str = "") -> list[str]:
    """Labels that `expr` (and `shown`, the text that names its result's labels: an alert's
    annotations, a panel's legend) uses and none of its series has."""
    problems, seen = [], set(_SCRAPE)
    for m in _SELECTOR.finditer(expr):
        name, matchers = m.group(1), m.group(2) or ""
        if name not in known:
            continue
        seen |= known[name]
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
            if label not in known[name]:
                problems.append(f"{name} has no label {label!r}")
    if all(m.group(1) in known for m in _SELECTOR.finditer(expr)):  # (every series known)
        for group in _GROUPING.findall(expr):
            problems += [f"no series of it has {label!r}" for label in
                         (x.strip() for x in group.split(",")) if label and label not in seen]
        problems += [f"$labels.{label}: no series of it has {label!r}" for label in
                     re.findall(r"\$labels\.(\w+)", shown) if label not in seen]
    return problems


def _rules_and_panels() -> list[tuple[str, str, str]]:
    """(what, expression, the text naming its labels) of every rule and dashboard query."""
    from tests.test_deploy_monitoring import DASHBOARD, RULES

    out = []
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            out.append((r.get("alert") or r["record"], r["expr"],
                        " ".join(map(str, (r.get("annotations") or {}).values()))))
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        for t in p.get("targets", []):
            legend = re.sub(r"\{\{\s*(\w+)\s*\}\}", r"$labels.\1", t.get("legendFormat", ""))
            out.append((p["title"], t["expr"], legend))
    return out


def test_rules_and_dashboard_use_only_labels_their_series_have() -> None:
    """The names of the series were checked, not their labels: a selector, a `by` or an
    `on` naming a label the series lacks matches nothing or joins nothing, without an
    error anywhere (promtool accepts it, Prometheus evaluates it: the alert never fires)."""
    known, shipped = _exported_labels(), _rules_and_panels()
    # recording rules: the labels they keep
    for what, expr, _ in shipped:
        if what.startswith("killgate:"):
            known[what] = {x.strip() for g in _GROUPING.findall(expr) for x in g.split(",")
                           if x.strip() and x.strip() != "le"} - _SCRAPE
    checked = {n for _, e, _ in shipped for n, _ in _SELECTOR.findall(e)}
    assert {"killgate_requests_total", "killgate_request_duration_seconds_bucket",
            "killgate_drill_last_passed", "killgate_split_drift"} <= checked & set(known)
    problems = [(what, p) for what, expr, shown in shipped
                for p in _label_problems(expr, known, shown)]
    assert not problems, problems
    # and the check sees a wrong one
    assert _label_problems('sum by (route) (rate(killgate_requests_total{rout="x"}[1m]))', known)
    assert _label_problems("sum by (rout) (rate(killgate_requests_total[1m]))", known)
    assert _label_problems("killgate_state_stale", known, "{{ $labels.route }}")
    assert not _label_problems("killgate_state_stale", known, "{{ $labels.instance }}")
