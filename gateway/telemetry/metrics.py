"""Process-local counters and gauges, rendered in the Prometheus text format.

Owns the metric names and their help texts. Increments are plain dict updates (the data
plane calls them on every request, so no locks and no label objects); rendering happens
only when /metrics is scraped. Side channel: nothing here may fail a request.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Metrics"]

_HELP: dict[str, tuple[str, str]] = {
    "killgate_requests_total": ("counter", "Requests answered by the data plane."),
    "killgate_upstream_errors_total": ("counter", "Failed exchanges with a backend, by kind."),
    "killgate_failovers_total": ("counter", "Requests moved to another version before delivery."),
    "killgate_retries_total": ("counter", "Delivered requests retried on another version "
                                          "(routes that opt in with `retry`)."),
    "killgate_inflight_aborted_total": ("counter", "In-flight responses cut by a kill."),
    "killgate_state_generation": ("gauge", "Generation of the replicated state applied here."),
    "killgate_kill_state_age_seconds": ("gauge", "Seconds since the state store last confirmed "
                                                 "this instance's state."),
    "killgate_state_store_connected": ("gauge", "1 when the state store answers."),
    "killgate_state_stale": ("gauge", "1 while no state sync succeeded for longer than "
                                      "state.max_staleness (alert on it)."),
    "killgate_fail_closed": ("gauge", "1 while the fail_closed policy treats all routes as killed."),
    "killgate_state_reseeds_total": ("counter", "Times this instance re-seeded an emptied store."),
    "killgate_config_reloads_total": ("counter", "Config reloads applied."),
    "killgate_config_reload_rejected_total": ("counter", "Config reloads refused (bad file)."),
    "killgate_inflight_requests": ("gauge", "Requests in flight in this process."),
    "killgate_audit_records_total": ("counter", "Audit events appended."),
    "killgate_audit_mirror_failures_total": ("counter", "Failed attempts to copy the audit "
                                                        "trail to the mirror file."),
    "killgate_auth_failures_total": ("counter", "Admin requests refused by authentication or "
                                                "authorization."),
    "killgate_audit_denied_failures_total": ("counter", "Failed attempts to write denied admin "
                                                        "calls to the audit trail (retried)."),
    "killgate_client_send_timeouts_total": ("counter", "Clients dropped for reading nothing "
                                                       "for server.send_timeout."),
    "killgate_upstream_health": ("gauge", "1 when a version passes its health checks."),
    "killgate_upstream_ejections_total": ("counter", "Versions ejected by outlier detection."),
    "killgate_drills_open": ("gauge", "Recovery drills started and not yet ended."),
    "killgate_drills_overdue": ("gauge", "Open drills past their deadline (restore them)."),
    "killgate_drill_tokens_refused_total": ("counter", "Requests whose drill token did not "
                                                       "verify (forged, altered or expired)."),
    "killgate_drill_last_passed": ("gauge", "1 when the last drill of this kind and route "
                                            "passed."),
    "killgate_drill_last_timestamp_seconds": ("gauge", "When the last drill ended (unix)."),
    "killgate_drill_last_duration_seconds": ("gauge", "How long the last drill ran."),
    "killgate_drill_last_leaks": ("gauge", "Answers from the killed version after the "
                                           "receipt, in the last drill."),
    "killgate_drill_last_errors": ("gauge", "Errors the last drill's requests saw."),
    "killgate_drill_last_seconds": ("gauge", "The last drill's measure (time_to_kill, ...; "
                                             "the slowest instance)."),
}


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[str, ...], float]] = {}
        self._label_names: dict[str, tuple[str, ...]] = {}
        self._collectors: list[Callable[[Metrics], None]] = []

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

    def get(self, name: str, labels: tuple[str, ...] = ()) -> float:
        return self._values.get(name, {}).get(labels, 0.0)

    def collector(self, fn: Callable[[Metrics], None]) -> None:
        """Called before each render to refresh gauges computed on demand."""
        self._collectors.append(fn)

    def render(self) -> str:
        for fn in self._collectors:
            fn(self)
        lines: list[str] = []
        for name in sorted(self._values):
            kind, help_ = _HELP.get(name, ("untyped", name))
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            names = self._label_names.get(name, ())
            for labels, value in sorted(self._values[name].items()):
                v = int(value) if value == int(value) else value
                lines.append(f"{name}{_labels(names, labels)} {v}")
        return "\n".join(lines) + "\n"
