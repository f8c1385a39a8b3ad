"""Process-local counters and gauges, exposed through `prometheus_client` collectors.

Owns the process's series and the /metrics exposition (the library's text format, or
OpenMetrics when the scraper asks for it; written by telemetry/exposition.py from the
values taken at once, `page`, a part at a time); the names' types and help texts, and the series
there from the start, are data in `telemetry.metricnames` (re-exported here). Increments
are plain dict updates (no locks, no label objects): the data plane and the background
tasks call them freely; families are built only when /metrics is scraped. Other parts add
whole families through `source()` (the request series of `telemetry.requests`). Imports
only prometheus_client, telemetry/exposition.py and that data. Side channel: nothing here may fail a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from gateway.telemetry.exposition import Family, Rows, as_metric, chunks, encoding, expand
from gateway.telemetry.metricnames import HELP, INITIAL

__all__ = ["HELP", "INITIAL", "Metrics", "Source", "families_of", "kind_of"]


class Source(Protocol):
    """Anything that builds whole metric families at scrape time (a source may also have
    `families()`: the same families, ours as plain `Rows`, which /metrics writes itself)."""

    def collect(self) -> Iterable[Metric]: ...


def families_of(src: Source) -> Iterable[Family]:
    """`src`'s families: as `Rows` where it can make them, else its `Metric`s."""
    fams: Callable[[], Iterable[Family]] | None = getattr(src, "families", None)
    return fams() if fams is not None else src.collect()


def kind_of(name: str) -> tuple[str, str]:
    """(type, help) of a series name."""
    known = HELP.get(name)
    if known is not None:
        return known
    return ("counter" if name.endswith("_total") else "gauge",
            f"{name} (undocumented: add it to telemetry/metricnames.py HELP)")


class Metrics:
    """The process's metrics: simple series kept here, families from registered sources."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[str, ...], float]] = {}
        self._label_names: dict[str, tuple[str, ...]] = {}
        self._refresh: list[Callable[[Metrics], None]] = []
        self._sources: list[Source] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._exposed: Source = self  # what /metrics renders: this process, or its group
        for name, (label_names, series) in INITIAL.items():
            for labels in series:
                self.set(name, 0.0, labels, label_names)

    def expose(self, collector: Source) -> None:
        """/metrics renders `collector` instead of this process's series alone (the merged
        series of a `--workers N` group: telemetry/workers.py)."""
        self._exposed = collector

    # ------------------------------------------------------------------ counting

    def inc(self, name: str, labels: tuple[str, ...] = (), by: float = 1.0,
            label_names: tuple[str, ...] = ()) -> None:
        series = self._values.get(name)
        if series is None:
            series = self._values[name] = {}
            self._label_names[name] = label_names
        series[labels] = series.get(labels, 0.0) + by

    def set(self, name: str, value: float, labels: tuple[str, ...] = (),
            label_names: tuple[str, ...] = ()) -> None:
        series = self._values.get(name)
        if series is None:
            series = self._values[name] = {}
            self._label_names[name] = label_names
        series[labels] = value

    def clear(self, name: str) -> None:
        """Drop every series of `name` (a collector that sets them afresh at each scrape,
        so a series its source no longer has goes too); the family stays, empty."""
        if name in self._values:
            self._values[name] = {}

    def get(self, name: str, labels: tuple[str, ...] = ()) -> float:
        return self._values.get(name, {}).get(labels, 0.0)

    def collector(self, fn: Callable[[Metrics], None]) -> None:
        """`fn` runs before each scrape to refresh values computed on demand."""
        self._refresh.append(fn)

    def source(self, src: Source) -> None:
        """Families built by `src` at each scrape are exposed too."""
        self._sources.append(src)

    @property
    def sources(self) -> tuple[Source, ...]:
        return tuple(self._sources)

    def dump(self) -> list[tuple[str, tuple[str, ...], dict[tuple[str, ...], float]]]:
        """Every simple series as plain data, refreshed as for a scrape: (name, label
        names, labels -> value). What a worker shares with its group (telemetry/workers.py)."""
        for fn in self._refresh:
            fn(self)
        return [(name, self._label_names.get(name, ()), dict(series))
                for name, series in self._values.items()]

    # ------------------------------------------------------------------ exposition

    def families(self) -> Iterator[Family]:
        """Every family, ours as `Rows` (refreshed first)."""
        for fn in self._refresh:
            fn(self)
        for name in sorted(self._values):
            kind, help_ = kind_of(name)
            yield Rows(name, "counter" if kind == "counter" else "gauge", help_,
                       self._label_names.get(name, ()), sorted(self._values[name].items()))
        for src in self._sources:
            yield from families_of(src)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector protocol."""
        for f in expand(self.families()):
            yield as_metric(f)

    def render(self) -> str:
        """The Prometheus text format (0.0.4), as prometheus_client writes it."""
        return generate_latest(self.registry).decode()

    def page(self, accept: str | None) -> tuple[Iterator[bytes], str]:
        """A scrape with this Accept header: its families taken now, in one go (a
        snapshot: no value changes under the page), then its bytes a slice at a time
        (telemetry/exposition.py), and the content type: OpenMetrics when asked for, else
        the text format; a malformed header gets the text format."""
        fmt = encoding(accept)
        return chunks(list(families_of(self._exposed)), fmt), fmt.content_type

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The whole page for a scrape with this Accept header, and its content type."""
        parts, ctype = self.page(accept)
        return b"".join(parts), ctype
