"""The metric names as data: each series' type and help text, and those there from the start.

Owns `HELP` (name -> (type, help): every `killgate_*` series counted in gateway/ is
described here; a test scans the source for them) and `INITIAL` (the series at 0 from the
start, with their label values). Plain data: imports nothing; `telemetry.metrics` reads
it, and re-exports both names.
"""

from __future__ import annotations

__all__ = ["HELP", "INITIAL"]

# name -> (type, help). A series counted somewhere in gateway/ must be described here (a
# test reads the source for `killgate_*` names); one that is not gets a type from its
# name (`_total`: counter, else gauge) and says that it is undocumented.
HELP: dict[str, tuple[str, str]] = {
    "killgate_requests_total": ("counter", "Requests answered by the data plane, by route, "
                                           "version, decision, arm and status code."),
    "killgate_requests_shed_total": ("counter", "Requests refused at once because "
                                                "server.max_inflight requests were in flight, "
                                                "or server.model_peek_memory bytes of bodies "
                                                "were held to read their model."),
    "killgate_connections_reclaimed_total": ("counter", "Client connections with no request "
                                                        "in progress closed to make room at "
                                                        "server.max_connections."),
    "killgate_connections_refused_total": ("counter", "Client connections closed at once, "
                                                      "by reason: connections "
                                                      "(server.max_connections were open), "
                                                      "per_client (the address held "
                                                      "server.max_connections_per_client)."),
    "killgate_upstream_errors_total": ("counter", "Failed exchanges with a backend, by kind."),
    "killgate_failovers_total": ("counter", "Requests moved to another version before delivery."),
    "killgate_retries_total": ("counter", "Delivered requests retried on another version "
                                          "(routes that opt in with `retry`)."),
    "killgate_inflight_aborted_total": ("counter", "In-flight responses cut by a kill."),
    "killgate_state_generation": ("gauge", "Generation of the replicated state applied here."),
    "killgate_kill_state_age_seconds": ("gauge", "Seconds since the state store last confirmed "
                                                 "this instance's state."),
    "killgate_state_store_connected": ("gauge", "1 when the state store answers (its reads "
                                                "verify, or it holds a document this "
                                                "instance cannot verify)."),
    "killgate_state_pushes_cut": ("gauge", "1 while the store's pushes (its pub/sub "
                                           "subscription) are refused or cut but its reads "
                                           "verify: changes arrive at poll_interval's "
                                           "pace."),
    "killgate_state_writes_refused": ("gauge", "1 while the store answers and its reads "
                                               "verify but it refuses every write (redis's "
                                               "min-replicas-to-write: -NOREPLICAS): kills "
                                               "only with ?local=1."),
    "killgate_state_replicas": ("gauge", "With state.min_replicas: the replicas the store's "
                                         "primary holds in sync (online, acked within 10 s), "
                                         "asked with each heartbeat; below "
                                         "killgate_state_min_replicas every write is answered "
                                         "503 not_durable (absent while unknown: a redis user "
                                         "that may run neither INFO nor ROLE)."),
    "killgate_state_min_replicas": ("gauge", "state.min_replicas: the replicas a write waits "
                                             "for (absent when 0)."),
    "killgate_state_stale": ("gauge", "1 while no state sync succeeded for longer than "
                                      "state.max_staleness (alert on it)."),
    "killgate_state_newer_document": ("gauge", "1 while the store holds a document a newer "
                                               "version of killgate wrote, which this one "
                                               "cannot apply (not synced: a rolling upgrade "
                                               "or a rollback; alert on it before "
                                               "state.max_staleness)."),
    "killgate_kills_unrouted": ("gauge", "Kills in force that name a route or version the "
                                         "config does not route to (removed or renamed): "
                                         "they stop nothing until the name comes back."),
    "killgate_overrides_unservable": ("gauge", "Routes whose latched override gives traffic "
                                               "only to versions this instance's config does "
                                               "not have: no version serves there (fallback "
                                               "or 503) until release or such a config."),
    "killgate_fail_closed": ("gauge", "1 while the fail_closed policy treats all routes as killed."),
    "killgate_build_info": ("gauge", "1, labelled with the killgate version this instance "
                                     "runs and its build (a digest of its code: count by "
                                     "(build) while an upgrade rolls out; not `version`, "
                                     "the model version of every other series)."),
    "killgate_state_unknown_answers_total": ("counter", "Data-plane requests answered with "
                                                        "503 state_unknown (or the route's "
                                                        "fallback) because this instance had "
                                                        "not loaded the kill state yet."),
    "killgate_state_reseeds_total": ("counter", "Times this instance re-seeded an emptied store."),
    "killgate_state_pushes_not_read_total": ("counter", "Pushed state documents over 1 MiB, "
                                                        "not verified as they came: the store "
                                                        "was re-read instead (at most 4 a "
                                                        "second)."),
    "killgate_state_snapshot_write_failures_total": ("counter", "Writes of the snapshot file "
                                                                "(state.snapshot_path) that "
                                                                "failed: a restart would "
                                                                "enforce an older one."),
    "killgate_local_kills": ("gauge", "Emergency local kills this instance enforces that are "
                                      "not yet in the state store (taken with ?local=1 "
                                      "while it could not commit): merged when it answers "
                                      "(one merged whose journal entry cannot be dropped, "
                                      "a read-only volume, is not counted)."),
    "killgate_state_snapshot_failing": ("gauge", "1 while the newest write of the snapshot "
                                                 "file (state.snapshot_path) failed: a "
                                                 "restart would enforce an older one (alert "
                                                 "on it)."),
    "killgate_writes_not_durable_total": ("counter", "Writes that fewer than state.min_replicas "
                                                     "replicas confirmed in time."),
    "killgate_config_reloads_total": ("counter", "Config reloads applied."),
    "killgate_config_reload_rejected_total": ("counter", "Config reloads refused (bad file)."),
    "killgate_config_refused": ("gauge", "1 while the config file on disk is refused (the "
                                         "running config stays; an instance starting on "
                                         "that file would refuse to start): alert on it."),
    "killgate_admin_auth_broken": ("gauge", "1 while the admin API's own key (admin.auth) "
                                            "cannot be used: every admin call, a kill and "
                                            "Alertmanager's included, answers 503 "
                                            "auth_not_configured (alert on it)."),
    "killgate_config_reload_waiting": ("gauge", "1 while a reload waits for the config file's "
                                                "writer to finish (config.waiting)."),
    "killgate_inflight_requests": ("gauge", "Requests in flight in this process."),
    "killgate_audit_records_total": ("counter", "Audit events appended."),
    "killgate_audit_mirror_failures_total": ("counter", "Failed attempts to copy the audit "
                                                        "trail to the mirror file."),
    "killgate_admin_refused_total": ("counter", "Admin connections closed or requests refused "
                                     "by the listener's guards, by reason (connections, "
                                     "head_size, timeout, host, scrapes: a /metrics "
                                     "render past the cap of renders waiting)."),
    "killgate_break_glass_total": ("counter", "Writes that skipped a required approval with "
                                   "the killgate:breakglass scope, by action."),
    "killgate_approval_unknown_action_total": ("counter", "Approval requests of an action "
                                               "this version does not know (a newer one "
                                               "wrote them: a rolling upgrade), left alone "
                                               "by the expiry sweep; once per request."),
    "killgate_state_unverified_total": ("counter", "Values from the state store refused: "
                                                   "unsigned, badly signed or malformed "
                                                   "(documents, pushes, acks, ...), by kind."),
    "killgate_state_previous_key_total": ("counter", "Values verified only with the previous "
                                                     "signing key (a rotation's overlap)."),
    "killgate_state_retired_key_total": ("counter", "Values from the state store refused "
                                                    "for a key id the fleet retired (written "
                                                    "before a rotation; not tampering), by "
                                                    "kind."),
    "killgate_audit_mirror_refused_total": ("counter", "Times the audit mirror refused events "
                                                       "that do not continue its last line."),
    "killgate_audit_mirror_ok": ("gauge", "0 while the audit mirror refuses to continue, "
                                          "or is stopped by an unexpected error until it "
                                          "restarts (alert on it)."),
    "killgate_audit_mirror_restarts_total": ("counter", "Times the audit mirror's copy was "
                                                        "started again after an unexpected "
                                                        "error stopped it."),
    "killgate_audit_trail_lost_total": ("counter", "Times the store was found without the "
                                                   "audit trail this instance had anchored."),
    "killgate_auth_failures_total": ("counter", "Admin requests refused by authentication or "
                                                "authorization (409: signed in as another "
                                                "principal than X-Killgate-Subject)."),
    "killgate_audit_denied_failures_total": ("counter", "Failed attempts to write denied admin "
                                                        "calls to the audit trail (retried)."),
    "killgate_client_send_timeouts_total": ("counter", "Clients dropped for reading too "
                                                       "slowly: nothing for server.send_timeout, "
                                                       "below server.body_min_rate, "
                                                       "or a streamed answer not taken within "
                                                       "the route's timeouts.total."),
    "killgate_client_body_timeouts_total": ("counter", "Request bodies ended with 408 (or a "
                                                       "cut stream) by the client's delay, by "
                                                       "reason: stalled (nothing for "
                                                       "server.body_timeout), incomplete (a "
                                                       "body of up to 64 KiB not whole within "
                                                       "it), min_rate (below "
                                                       "server.body_min_rate)."),
    "killgate_bad_requests_total": ("counter", "Data-plane requests refused with 400 for their "
                                               "shape (ambiguous path, bad model field, bad "
                                               "header bytes), by reason."),
    "killgate_upstream_health": ("gauge", "1 when a version passes its health checks."),
    "killgate_upstream_ejections_total": ("counter", "Versions ejected by outlier detection."),
    "killgate_otel_exported_total": ("counter", "Spans (or metric batches) the OTLP collector "
                                                "accepted, by signal."),
    "killgate_otel_dropped_total": ("counter", "Spans (or metric batches) lost on the way to "
                                               "the OTLP collector, by signal and reason "
                                               "(queue_full, export_failed)."),
    "killgate_event_deliveries_total": ("counter", "Outgoing event webhook deliveries, by "
                                                   "result (delivered, failed, dropped)."),
    "killgate_alertmanager_alerts_total": ("counter", "Alerts received from Alertmanager, by "
                                                      "outcome (malformed, too_large, denied, "
                                                      "not_enabled: whole notifications "
                                                      "refused unread)."),
    "killgate_access_log_dropped_total": ("counter", "Access log lines dropped because the "
                                                     "buffer was full or the output failed."),
    "killgate_access_log_lines_total": ("counter", "Access log lines written."),
    # the shadow series (telemetry/shadowmetrics.py, CONTRACT §5.5)
    "killgate_shadow_copies_total": (
        "counter", "Requests sampled for a shadow copy, by what became of the copy: sent, "
                   "dropped (shadow.max_inflight), body (request too large), answer (answer "
                   "too large), down (shadow killed or unhealthy), failed (no shadow answer)."),
    "killgate_shadow_comparisons_total": (
        "counter", "Shadow answers compared with the client's, by outcome (agreed, noise, "
                   "disagreed, uncomparable)."),
    "killgate_shadow_differences_total": (
        "counter", "Compared shadow answers with a difference of this kind (counted once per "
                   "answer per kind, after the noise floor)."),
    "killgate_shadow_failures_total": (
        "counter", "Shadow copies that got no answer, by kind of failure."),
    "killgate_shadow_agreement_ratio": (
        "gauge", "Share of compared shadow answers that agreed with the client's (this "
                 "process; the fleet's is in GET /v1/routes/{route}/shadow)."),
    "killgate_shadow_inflight": ("gauge", "Shadow copies in flight in this process."),
    "killgate_shadow_duration_seconds": (
        "histogram", "Time to the whole answer of compared requests, for the primary (the "
                     "client's answer) and the shadow (its copy), by route and version."),
    # the request series (telemetry/requests.py)
    "killgate_request_duration_seconds": (
        "histogram", "Time from a request's arrival to the end of its answer, by route, "
                     "version, decision, arm and status class (code)."),
    "killgate_upstream_duration_seconds": (
        "histogram", "Time from sending a request to a backend to its response head "
                     "(the last attempt), by route and version."),
    "killgate_time_to_first_byte_seconds": (
        "histogram", "Time from a request's arrival to the first body byte of a streamed "
                     "answer (an SSE stream's time to first token), by route and version."),
    "killgate_split_share": (
        "gauge", "Share (0-1) of the last minute's answers of a route that each version "
                 "served (answers a client pinned left out)."),
    "killgate_split_expected_share": (
        "gauge", "Share (0-1) of a route's new traffic the routing table gives each version "
                 "now (its effective weight)."),
    "killgate_split_drift": (
        "gauge", "killgate_split_share minus killgate_split_expected_share: how far the "
                 "actual split is from the intended one."),
    "killgate_split_window_answers": (
        "gauge", "Answers a version served on a route in the last minute, pinned ones "
                 "left out (the denominator of killgate_split_share)."),
    "killgate_metrics_workers": ("gauge", "Workers of this process group (serve --workers N) "
                                          "whose series this scrape merged: fresh snapshots, "
                                          "the answering worker's included."),
    "killgate_worker_metrics_errors_total": ("counter", "Worker metric snapshots that could "
                                                        "not be written or read, by op."),
    "killgate_drills_open": ("gauge", "Recovery drills started and not yet ended."),
    "killgate_drills_overdue": ("gauge", "Open drills past their deadline (restore them)."),
    "killgate_drills_auto_restored_total": ("counter", "Drills past their deadline restored "
                                            "and ended by this instance "
                                            "(drills.auto_restore_after)."),
    "killgate_drill_tokens_refused_total": ("counter", "Requests whose drill token did not "
                                                       "verify (forged, altered or expired)."),
    "killgate_drill_last_passed": ("gauge", "1 when the last drill of this kind and route "
                                            "passed."),
    "killgate_drill_last_timestamp_seconds": ("gauge", "When the last drill ended (unix)."),
    "killgate_drill_last_duration_seconds": ("gauge", "How long the last drill ran."),
    "killgate_drill_last_leaks": ("gauge", "Answers showing the state from before the "
                                           "injection (the killed version, the version "
                                           "rolled back or failed) after the receipt, in the "
                                           "last drill."),
    "killgate_drill_last_errors": ("gauge", "Errors the last drill's requests saw."),
    "killgate_drill_last_seconds": ("gauge", "The last drill's measure (time_to_kill, ...; "
                                             "the slowest instance)."),
}


#: series there from the start, at 0: a counter that first appears at 1 hides its first
#: increase from Prometheus (`increase()` and `rate()` need two samples), and an alert
#: reading a gauge needs it there (name -> (label names, the label values of each series))
INITIAL: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "killgate_audit_mirror_failures_total": ((), ((),)),
    "killgate_audit_mirror_restarts_total": ((), ((),)),
    "killgate_audit_trail_lost_total": ((), ((),)),
    "killgate_state_reseeds_total": ((), ((),)),
    "killgate_approval_unknown_action_total": ((), ((),)),
    "killgate_state_pushes_not_read_total": ((), ((),)),
    "killgate_state_snapshot_write_failures_total": ((), ((),)),
    "killgate_state_snapshot_failing": ((), ((),)),
    "killgate_local_kills": ((), ((),)),
    "killgate_requests_shed_total": ((), ((),)),
    "killgate_drills_auto_restored_total": ((), ((),)),
    "killgate_state_unverified_total": (("kind",), tuple(
        (k,) for k in ("state", "push", "generation", "ack", "heartbeat", "idempotency",
                       "stats", "audit", "snapshot"))),
    "killgate_fail_closed": ((), ((),)),
    "killgate_state_stale": ((), ((),)),
    "killgate_state_newer_document": ((), ((),)),
    # (KillgateConfigRefused; the first refusal must be an increase too)
    "killgate_config_refused": ((), ((),)),
    "killgate_config_reload_rejected_total": ((), ((),)),
    "killgate_config_reloads_total": ((), ((),)),
    # (the outcomes the shipped alerts watch: KillgateAlertsNotDelivered, ...NotActed,
    # ...Refused)
    "killgate_alertmanager_alerts_total": (("outcome",), tuple(
        (o,) for o in ("truncated", "unmapped", "refused", "denied", "malformed",
                       "too_large", "not_enabled"))),
    # (labels from fixed sets, so their series can be there from the start; those labelled
    # by route and version come and go with the config and start at their first event)
    "killgate_client_send_timeouts_total": ((), ((),)),
    "killgate_client_body_timeouts_total": (("reason",), (("stalled",), ("incomplete",),
                                                          ("min_rate",))),
    "killgate_connections_refused_total": (("reason",), (("connections",), ("per_client",))),
    "killgate_connections_reclaimed_total": ((), ((),)),
    "killgate_admin_refused_total": (("reason",), tuple(
        (r,) for r in ("connections", "head_size", "timeout", "host", "scrapes"))),
    "killgate_auth_failures_total": (("code",), (("401",), ("403",), ("409",), ("429",))),
    "killgate_break_glass_total": (("action",), tuple(
        (a,) for a in ("unkill", "rollback", "promote", "weights", "release"))),
}
