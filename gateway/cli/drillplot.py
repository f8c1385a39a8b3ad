"""The drill's timeline picture: requests per instance over time, coloured by which version
answered (killed and failed answers apart), the injection, receipt and restore marked.

Owns the only import of matplotlib (the optional extra `killgate[drills]`); without it
`timeline` returns None and the drill goes on without a picture. SVG or PNG, by suffix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.domain.drillreport import Obs

__all__ = ["available", "bins", "timeline"]

_FIXED = {"killed": "#444444", "error": "#d62728"}
_MARKS: tuple[tuple[str, Any, str], ...] = (
    ("inject_sent", "--", "#d62728"), ("inject_done", ":", "#d62728"),
    ("restore_sent", "--", "#2ca02c"), ("restore_done", ":", "#2ca02c"))
_LABELS = {"inject_sent": "injection", "inject_done": "receipt (every instance applied)",
           "restore_sent": "restore", "restore_done": "restored"}
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22"]


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _outcome(o: Obs) -> str:
    if o.status == 0 or (o.status >= 500 and o.decision != "killed"):
        return "error"
    if o.decision == "killed":
        return "killed"
    return o.version or "?"


def bins(obs: Sequence[Obs], width: float) -> tuple[list[float], dict[str, dict[str, list[int]]]]:
    """Answers per instance and outcome in time bins of `width` seconds (by send time)."""
    if not obs:
        return [], {}
    n = int(max(o.sent for o in obs) / width) + 1
    out: dict[str, dict[str, list[int]]] = {}
    for o in obs:
        row = out.setdefault(o.instance, {})
        row.setdefault(_outcome(o), [0] * n)[int(o.sent / width)] += 1
    return [i * width for i in range(n)], out


def timeline(report: dict[str, Any], obs: Sequence[Obs], path: Path) -> Path | None:
    """Write the picture to `path` (.svg or .png); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    marks = {k: v / 1000.0 for k, v in (report.get("marks_ms") or {}).items()}
    span = max((o.sent for o in obs), default=1.0)
    period = 1.0 / float(report.get("rate") or 50)
    width = period * max(8, round(span / 60 / period))  # whole requests per bin
    xs, rows = bins(obs, width)
    outcomes = sorted({k for r in rows.values() for k in r}, key=lambda k: (k in _FIXED, k))
    colours = {k: _FIXED.get(k) or _PALETTE[i % len(_PALETTE)] for i, k in enumerate(outcomes)}
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.6 + 1.6 * n), sharex=True, squeeze=False)
    for ax, (inst, row) in zip(axes[:, 0], sorted(rows.items()), strict=False):
        keys = [k for k in outcomes if k in row]
        per_s = [[c / width for c in row[k]] for k in keys]
        ax.stackplot(xs, per_s, colors=[colours[k] for k in keys], step="post", linewidth=0)
        ax.set_ylabel("req/s")
        ax.set_title(inst, fontsize=9, loc="left")
        if "outage_start" in marks:
            ax.axvspan(marks["outage_start"], marks.get("outage_end", span), color="#ffd54f",
                       alpha=0.35, linewidth=0)
        for key, style, colour in _MARKS:
            if key in marks:
                ax.axvline(marks[key], linestyle=style, color=colour, linewidth=1.2)
    axes[-1, 0].set_xlabel("seconds since the drill began")
    handles: list[Any] = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in outcomes]
    labels = [k if k in _FIXED else f"answered by {k}" for k in outcomes]
    for key, style, colour in _MARKS:
        if key in marks:
            handles.append(plt.Line2D([0], [0], linestyle=style, color=colour))
            labels.append(_LABELS[key])
    if "outage_start" in marks:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="#ffd54f", alpha=0.35))
        labels.append("store unreachable")
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.01, 0.955), fontsize=8,
               ncol=4, frameon=False)
    title = (f"drill {report.get('id')}: {report.get('kind')} on {report.get('route')}"
             f"{' / ' + str(report['version']) if report.get('version') else ''}: "
             f"{str(report.get('verdict', '')).upper()}")
    fig.suptitle(title, x=0.01, y=0.99, ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9 if n > 1 else 0.8))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
    return path
