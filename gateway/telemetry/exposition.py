"""/metrics' text for our own families, written by our own code a slice at a time.

prometheus_client's exposition is generic: a dict of labels per sample, sorted per sample,
each value through `floatToGoString`, and the whole page in one call. With 100 routes x 2
versions x 3 status codes (20,500 lines) that held the event loop the data plane shares for
215 ms (text) / 360 ms (OpenMetrics) of CPU per scrape, 20 routes 44 / 72 ms, ~80 % of it
formatting (benchmarks/metrics_render.py, RESULTS §33): the library cannot meet "a scrape
costs the loop a few ms", so this module writes our families itself (~29 ms for that page,
in steps). A family is `Rows` (plain label values and numbers, taken from the counters in
one go on the loop, ~1.6 ms there) or a `Deferred` (made later from copied counts); each
row's label text is made once, each distinct value formatted once; `chunks` yields the page
a few dozen rows at a time, so a caller (admin/coalesce.py) can give the loop back between
slices. The bytes are prometheus_client's, byte for byte, in both of its formats (text
0.0.4 and OpenMetrics, as `choose_encoder` picks from the Accept header):
tests/test_exposition.py compares the two over escapes, special values and every family.
Families that are still prometheus_client `Metric`s (another source's; the group's shadow
series under --workers N), names with a colon, and escapings that rename (`escaping=dots`;
OpenMetrics' `escaping=values`) are written by the library itself, family by family.
Imports prometheus_client only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

__all__ = ["Deferred", "Family", "Format", "Rows", "as_metric", "chunks", "encoding", "expand"]

Encoder = Callable[[Any], bytes]
#: (label values, value) for a counter or gauge; (label values, the buckets' `le` texts,
#: their cumulative counts, sum) for a histogram (the last bucket is +Inf)
Row = (tuple[Sequence[str], float]
       | tuple[Sequence[str], Sequence[str], Sequence[float], float])
ROWS_PER_CHUNK = 16  # rows of a family between two yields (a histogram row: ~20 lines)

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")  # (no colon: OpenMetrics rewrites it)
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_EOF = b"# EOF\n"


class Rows:
    """One family as plain data: what its `Metric` would hold, without a dict per sample."""

    __slots__ = ("help", "labels", "name", "rows", "type")

    def __init__(self, name: str, type_: str, help_: str, labels: Sequence[str],
                 rows: list[Any]) -> None:
        # (a counter's family name without _total, as CounterMetricFamily names it)
        self.name = name[:-6] if type_ == "counter" and name.endswith("_total") else name
        self.type = type_
        self.help = help_
        self.labels = tuple(labels)
        self.rows: list[Any] = rows


class Deferred:
    """Families made later, from data already copied: a snapshot's heavier part (merging,
    sorting), made in the page's slices instead of on the loop in one go. `make` yields
    the families, and None between parts of its work (a slice may end there)."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Iterator[Rows | Metric | None]]) -> None:
        self.make = make


Family = Rows | Metric | Deferred


def expand(families: Iterable[Family]) -> Iterator[Rows | Metric]:
    """`families` with each `Deferred` made."""
    for f in _made(families):
        if f is not None:
            yield f


def as_metric(f: Rows | Metric) -> Metric:
    """The prometheus_client family of `f` (what the collectors' `collect` yields)."""
    if isinstance(f, Metric):
        return f
    m: Metric
    if f.type == "histogram":
        h = HistogramMetricFamily(f.name, f.help, labels=f.labels)
        for values, les, counts, total in f.rows:
            h.add_metric(list(values), list(zip(les, counts, strict=True)), total)
        return h
    if f.type == "counter":
        m = CounterMetricFamily(f.name, f.help, labels=f.labels)
    else:
        m = GaugeMetricFamily(f.name, f.help, labels=f.labels)
    for values, value in f.rows:
        m.add_metric(list(values), value)
    return m


class Format(NamedTuple):
    """How a scrape's page is written."""

    encoder: Encoder  # the library's (what writes the families this module does not)
    content_type: str
    openmetrics: bool
    #: False: the library rewrites names (escaping=dots; OpenMetrics escaping=values):
    #: the library writes every family then
    ours: bool


def encoding(accept: str | None) -> Format:
    """The format `choose_encoder` picks for a scrape's Accept header; a malformed header
    gets the text format."""
    try:
        encoder, ctype = choose_encoder(accept or "")
    except (ValueError, IndexError, TypeError):
        return Format(generate_latest, CONTENT_TYPE_PLAIN_0_0_4, False, True)
    fn, kw = (encoder.func, encoder.keywords) if isinstance(encoder, partial) else (encoder, {})
    om = fn is openmetrics.generate_latest
    escaping = kw.get("escaping", openmetrics.UNDERSCORES)
    kept = (openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8) if om else (
        openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8, openmetrics.VALUES)
    return Format(encoder, ctype, om, escaping in kept)


def scrape_format(accept: str | None) -> str:
    """The one Accept header that picks the page `accept` gets (`encoding`): "" for the text
    format 0.0.4, else the format, version and escaping we write, nothing else. Scrapes share
    a render only when their keys are equal (admin/coalesce.py): keyed by the header as sent,
    each of a flood's distinct headers (`version=1.0.<n>`, an unknown parameter) queued a
    render of its own. OpenMetrics is written as 1.0.0 whatever 1.x or later version is
    asked for (the library's later versions differ only in native histograms, which we do
    not have), so the set is small: the text format 0.0.4, and the text format 1.0.0 and
    OpenMetrics 1.0.0 in each of the library's four escapings."""
    try:
        encoder, _ = choose_encoder(accept or "")
    except (ValueError, IndexError, TypeError):
        return ""
    if not isinstance(encoder, partial):
        return ""
    escaping = encoder.keywords.get("escaping", openmetrics.UNDERSCORES)
    if encoder.func is openmetrics.generate_latest:
        return f"application/openmetrics-text; version=1.0.0; escaping={escaping}"
    return f"text/plain; version=1.0.0; escaping={escaping}"


class _One:
    """A registry of one family (what the library's encoders take)."""

    def __init__(self, m: Metric) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        yield self.m


def _library(m: Metric, fmt: Format) -> bytes:
    out = fmt.encoder(_One(m))
    return out[:-len(_EOF)] if fmt.openmetrics and out.endswith(_EOF) else out


def _esc(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _ours(f: Rows) -> bool:
    """Written here: our types, names the escapings keep as they are."""
    return f.type in ("counter", "gauge", "histogram") and bool(
        _NAME.match(f.name)) and all(_LABEL.match(n) for n in f.labels)


def chunks(families: Iterable[Family], fmt: Format) -> Iterator[bytes]:
    """The page of `families` in `fmt`, a few dozen rows per item."""
    values: dict[float, str] = {}  # (a value's text, by value: most repeat)

    def num(v: float) -> str:
        s = values.get(v) if v > 0 else None
        if s is None:
            s = floatToGoString(v)
            if v > 0:
                values[v] = s
        return s

    for f in _made(families):
        if f is None:
            yield b""  # (a deferred family was made: a slice's worth)
        elif isinstance(f, Rows) and fmt.ours and _ours(f):
            yield from _rows(f, fmt.openmetrics, num)
        else:
            yield _library(as_metric(f), fmt)
    if fmt.openmetrics:
        yield _EOF


def _made(families: Iterable[Family]) -> Iterator[Rows | Metric | None]:
    """`expand`, with a None after each part of a `Deferred`'s work."""
    for f in families:
        if isinstance(f, Deferred):
            for g in f.make():
                if g is not None:
                    yield None
                yield g
        else:
            yield f


def _rows(f: Rows, om: bool, num: Callable[[float], str]) -> Iterator[bytes]:
    name, names = f.name, f.labels
    shown = name if om or f.type != "counter" else name + "_total"
    doc = f.help.replace("\\", r"\\").replace("\n", r"\n")
    if om:
        doc = doc.replace('"', r"\"")
    out = [f"# HELP {shown} {doc}\n# TYPE {shown} {f.type}\n"]
    if f.type == "histogram":
        before = [n for n in names if n < "le"]
        after = [n for n in names if n > "le"]
        les: dict[str, str] = {}
        for i, (values, bounds, counts, total) in enumerate(f.rows):
            labels = dict(zip(names, values, strict=False))
            pre = "".join(f'{k}="{_esc(labels[k])}",' for k in sorted(before) if k in labels)
            post = "".join(f',{k}="{_esc(labels[k])}"' for k in sorted(after) if k in labels)
            head = f"{name}_bucket{{{pre}le=\""
            tail = f"\"{post}}} "
            for le, c in zip(bounds, counts, strict=True):
                q = les.get(le)
                if q is None:
                    q = les[le] = _esc(le)
                out.append(f"{head}{q}{tail}{num(c)}\n")
            if float(bounds[0]) >= 0 and total is not None:
                plain = _braces(labels)
                out.append(f"{name}_count{plain} {num(counts[-1])}\n"
                           f"{name}_sum{plain} {num(total)}\n")
            if i % ROWS_PER_CHUNK == ROWS_PER_CHUNK - 1:
                yield "".join(out).encode()
                out = []
    else:
        sample = name + "_total" if f.type == "counter" else name
        for i, (values, value) in enumerate(f.rows):
            out.append(f"{sample}{_braces(dict(zip(names, values, strict=False)))} "
                       f"{num(value)}\n")
            if i % (ROWS_PER_CHUNK * 16) == ROWS_PER_CHUNK * 16 - 1:
                yield "".join(out).encode()
                out = []
    yield "".join(out).encode()


def _braces(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(labels.items())) + "}"
