"""OpenAPI paths beside the state API's core: the console's reads, the shadow report,
Alertmanager's webhook and the audit trim (admin/console.py, admin/shadow.py,
control/alerts.py, admin/audittrim.py).

Owns their request and answer schemas, merged into the document by `admin.openapi`.
Pure data, from the blocks of admin/openapi_parts.py.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.openapi_parts import auth_errors, err, open_get, read

__all__ = ["alertmanager", "audit_trim", "console", "shadow"]

_ALERT = {
    "type": "object", "required": ["status", "fingerprint", "startsAt"],
    "properties": {"status": {"enum": ["firing", "resolved"]},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "annotations": {"type": "object",
                                   "additionalProperties": {"type": "string"}},
                   "fingerprint": {"type": "string", "minLength": 1, "maxLength": 64},
                   "startsAt": {"type": "string", "minLength": 1, "maxLength": 64},
                   "endsAt": {"type": "string"}, "generatorURL": {"type": "string"}},
}
_ALERT_RESULT = {
    "type": "object", "required": ["fingerprint", "action", "target", "generation", "dry_run",
                                   "outcome"],
    "properties": {
        "fingerprint": {"type": "string"}, "alertname": {"type": ["string", "null"]},
        "action": {"enum": ["kill", "rollback", "none"]},
        "target": {"type": ["object", "null"]},
        "generation": {"type": ["integer", "null"]}, "dry_run": {"type": "boolean"},
        "outcome": {"enum": ["acted", "unchanged", "duplicate", "dry_run", "resolved",
                             "ignored", "unmapped", "refused", "deferred", "local"]},
        "message": {"type": "string"}, "audit_id": {"type": "string"},
        "applied": {"type": "object"},
        # (a kill the store could not commit, taken as a local kill: control/alertlocal.py)
        "local": {"type": "boolean"}, "id": {"type": "string"}, "changed": {"type": "boolean"}},
}


def alertmanager() -> dict[str, Any]:
    return {
        "summary": "Alertmanager's webhook (payload version 4): alerts labelled "
                   "killgate_action kill|rollback with route (and version) act; a resolved "
                   "alert never lifts anything; a firing alert acts once (fingerprint + "
                   "startsAt); mode observe records what would have been done",
        "security": [{"bearer": []}], "x-scope": "killgate:alert",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["version", "receiver", "status", "alerts"],
            "properties": {"version": {"const": "4"},
                           "receiver": {"type": "string", "minLength": 1, "maxLength": 4096,
                                        "description": "not printable ASCII: escaped; "
                                                       "cut to 128 characters (the actor)"},
                           "status": {"enum": ["firing", "resolved"]},
                           "groupKey": {"type": "string"}, "externalURL": {"type": "string"},
                           "alerts": {"type": "array", "minItems": 1, "maxItems": 1000,
                                      "items": _ALERT}}}}}},
        "responses": {
            "200": {"description": "one entry per alert, in order", "content": {
                "application/json": {"schema": {
                    "type": "object", "required": ["actions"],
                    "properties": {"actions": {"type": "array", "items": _ALERT_RESULT},
                                   "receiver": {"type": "string"},
                                   "status": {"type": "string"},
                                   "mode": {"enum": ["act", "observe"]}}}}}},
            **auth_errors(True),
            "404": err("alerts.alertmanager is not configured here"),
            "503": err("too_many_alerts: more new firing alerts than one instance acts on "
                        "(those beyond were not acted on; Alertmanager retries), or the "
                        "state store is unavailable")},
    }


def shadow(route_s: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/routes/{route}/shadow (CONTRACT §5.5, admin/shadow.py)."""
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    lat = {"type": "object", "properties": {"p50": {"type": ["number", "null"]},
                                            "p99": {"type": ["number", "null"]}}}
    body = {"type": ["object", "string", "array", "number", "boolean", "null"], "description":
            "JSON (fields named by shadow.disagreements.redact replaced by \"[redacted]\"), "
            "or text cut to shadow.disagreements.max_body bytes"}
    answer = {"type": "object", "required": ["status", "body"],
              "properties": {"status": {"type": "integer"}, "body": body}}
    item = {"type": "object", "required": ["time", "request", "primary", "shadow"],
            "properties": {"time": {"type": "string"}, "request": body, "primary": answer,
                           "shadow": answer,
                           "differences": {"type": "array", "items": {
                               "type": "object", "required": ["kind", "path"], "properties": {
                                   "kind": {"type": "string"}, "path": {"type": "string"}}}},
                           "detail": {"type": "object"}}}
    op = read(
        "the route's shadow: how often its answers agreed with the ones clients got (the "
        "fleet's counts, for the shadow settings in force), dropped copies, both sides' "
        "latency and the newest sampled disagreements",
        ["version", "compared", "agreed", "agreement", "dropped", "disagreements"],
        {"route": {"type": "string"}, "version": {"type": "string"},
         "compare": {"enum": ["v2_tensors", "openai_chat", "json"]},
         "sample": {"type": "number"},
         "compared": {"type": "integer", "description": "agreed + disagreed (uncomparable "
                                                         "answers are not counted)"},
         "agreed": {"type": "integer", "description": "agreed, or every difference within "
                                                       "the noise floor"},
         "agreement": {"type": ["number", "null"], "description": "agreed / compared"},
         "agreed_with_noise": {"type": "integer", "description": "of `agreed`: only within "
                               "the noise floor (outcomes.noise)"},
         "agreed_excusing_answer": {"type": "integer", "description": "of those: the answer "
                                    "itself (a chat text, tensor values, a body, a json "
                                    "answer_paths field) was excused as noise; the gate "
                                    "counts them as no comparison"},
         "dropped": {"type": "integer", "description": "copies dropped at max_inflight"},
         "outcomes": counts, "copies": counts, "failures": counts, "differences": counts,
         "latency_ms": {"type": "object", "properties": {"primary": lat, "shadow": lat}},
         "length_change": {"type": ["number", "null"]},
         "noise": {"type": "object", "properties": {"pairs": {"type": "integer"},
                                                    "paths": counts}},
         "instances": {"type": "integer"},
         "gate": {"type": "object", "description": "with analysis.min_shadow_agreement: "
                  "whether the shadow may get traffic; its `compared` counts the copies the "
                  "shadow failed (`failures`: timeout, reset, malformed, connect, "
                  "answer_too_large) as compared and not agreed, and its `agreement` is "
                  "agreed / that `compared`; both of requests the primary answered 2xx only "
                  "(`other_status`: the comparisons of the others, not counted; "
                  "`older_instances`: those of instances of an older version, which do not "
                  "say the primary's status, not counted either)"},
         "disagreements": {"type": "array", "items": item}})
    get = op["get"]
    get["parameters"] = [
        {"name": "route", "in": "path", "required": True, "schema": route_s},
        {"name": "limit", "in": "query", "required": False,
         "description": "disagreements listed, newest first (default 20)",
         "schema": {"type": "integer", "minimum": 1, "maximum": 100}}]
    get["responses"]["404"] = err("unknown route, or the route has no shadow")
    return op


def console() -> dict[str, Any]:
    """What the operator console (GET /ui/) reads besides status and audit."""
    num_list = {"type": "array", "items": {"type": ["number", "null"]}}
    return {
        "/ui/": open_get("the operator console (static page; its API calls carry your token)",
                      {"type": "string"}, "text/html"),
        "/v1/whoami": read(
            "the subject and scopes of the presented token (any valid token); without an "
            "Authorization header: subject null (how the console detects a signing proxy)",
            ["subject", "scopes", "can"],
            {"subject": {"type": ["string", "null"]},
             "scopes": {"type": "array", "items": {"type": "string"}},
             "can": {"type": "object", "additionalProperties": {"type": "boolean"},
                     "description": "read, kill, rollout, alert, drill, admin, breakglass"}}, scope=None),
        "/v1/fleet": read(
            "every instance heard from: generation, config digest, heartbeat age; this "
            "instance's store connection, staleness and fail-closed state",
            ["instance", "generation", "config_digest", "store", "instances", "live"],
            {"instance": {"type": "string"}, "generation": {"type": "integer"},
             "config_digest": {"type": "string"}, "lease_s": {"type": "number"},
             "store": {"type": "object"}, "fleet_error": {"type": ["string", "null"]},
             "live": {"type": "integer"}, "config_digests": {"type": "integer"},
             "key_ids": {"type": "object", "description": "per state key id, how many live "
                         "instances sign with it and trust it (a rotation's step 2 is safe "
                         "once the new key is trusted by every live instance)",
                         "additionalProperties": {"type": "object", "properties": {
                             "signing": {"type": "integer"}, "trusted": {"type": "integer"}}}},
             "instances": {"type": "array", "items": {
                 "type": "object",
                 "required": ["instance", "self", "live", "generation", "behind", "config"],
                 "properties": {
                     "instance": {"type": "string"}, "self": {"type": "boolean"},
                     "live": {"type": "boolean", "description":
                              "heard from within the instance lease"},
                     "generation": {"type": "integer"},
                     "behind": {"type": "integer", "description":
                                "generations behind the answering instance"},
                     "config": {"type": "string"}, "config_matches": {"type": "boolean"},
                     "seen_s_ago": {"type": ["number", "null"]},
                     "key_ids": {"type": ["array", "null"], "items": {"type": "string"},
                                 "description": "the state key ids it trusts, the one it "
                                                "signs with first (null: not said)"},
                     "build": {"type": ["string", "null"], "description":
                               "the build it runs (`killgate --version`, killgate_build_info; "
                               "null: a version before it said it): which instances an "
                               "upgrade has reached"}}}}}),
        "/v1/traffic": read(
            "per route and version, the fleet's exchanges with backends over the last "
            "window_s seconds in step_s buckets: rate, error rate, p99 (bucket upper bound, "
            "ms); every instance publishes its counts every step_s",
            ["step_s", "window_s", "end", "t", "routes", "scope", "instances"],
            {"step_s": {"type": "integer"}, "window_s": {"type": "integer"},
             "end": {"type": "integer"}, "t": {"type": "array", "items": {"type": "integer"}},
             "scope": {"enum": ["fleet", "instance"], "description":
                       "instance: the store could not be read, only this instance's counts"},
             "instance": {"type": "string"},
             "instances": {"type": "array", "items": {"type": "string"}},
             "silent": {"type": "array", "items": {"type": "string"}},
             "dropped_blobs": {"type": "integer"},
             "store_error": {"type": ["string", "null"]},
             "routes": {"type": "object", "additionalProperties": {
                 "type": "object", "additionalProperties": {
                     "type": "object",
                     "required": ["requests", "errors", "rps", "error_rate", "p99_ms"],
                     "properties": {"requests": num_list, "errors": num_list, "rps": num_list,
                                    "error_rate": num_list, "p99_ms": num_list}}}}}),
    }


def audit_trim(reason: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/audit/trim (admin/audittrim.py)."""
    return {"/v1/audit/trim": {"post": {
        "summary": "trim the audit trail back to state.audit_retention's bounds now (a "
                   "signed audit.trim checkpoint, the caller its actor), or `dry_run`: how "
                   "many events the first trim would remove; Idempotency-Key as any write",
        "security": [{"bearer": []}], "x-scope": "killgate:admin",
        "parameters": [{"name": "dry_run", "in": "query", "required": False,
                        "schema": {"enum": ["true", "false"]}}],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "properties": {"reason": reason},
            "description": "`reason` required unless dry_run"}}}},
        "responses": {"200": {"description": "what was removed, or would be", "content": {
            "application/json": {"schema": {"type": "object", "required": ["dry_run"],
                                            "properties": {
                "dry_run": {"type": "boolean"}, "removed": {"type": "integer"},
                "checkpoints": {"type": "array", "items": {"type": "string"}},
                "events": {"type": ["integer", "null"]},
                "would_remove": {"type": "integer"}, "more": {"type": "boolean"},
                "broken": {"type": "boolean", "description": "batches went, then the next "
                           "met a break (tamper evidence), named in `why`"},
                "why": {"type": "string"}}}}}},
            **auth_errors(True),
            "409": err("`retention_off` (no state.audit_retention), `trim_running` (a trim "
                       "is running, or the trail kept changing), `trail_broken` (it does not "
                       "verify: nothing is removed), or `idempotency_key_reused`")}}}}


def state_vouch(reason: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/state/vouch (admin/vouch.py)."""
    return {"/v1/state/vouch": {"post": {
        "summary": "say this instance's signing key is the fleet's: clears the mark of state "
                   "that came from a snapshot it could not verify (`unverified_origin`, "
                   "kills only) with an audited write (`state.vouch`, a new epoch); "
                   "Idempotency-Key as any write",
        "security": [{"bearer": []}], "x-scope": "killgate:admin",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "required": ["reason"],
            "properties": {"reason": reason}}}}},
        "responses": {"200": {"description": "vouched", "content": {
            "application/json": {"schema": {"type": "object", "required": [
                "vouched", "instance", "was", "generation", "epoch"], "properties": {
                "vouched": {"type": "boolean"}, "instance": {"type": "string"},
                "was": {"type": "string", "description": "why it was not known to be the "
                                                         "fleet's"},
                "generation": {"type": "integer"}, "epoch": {"type": "string"}}}}}},
            **auth_errors(True),
            "409": err("`nothing_to_vouch`: its state is known to be the fleet's (nothing "
                       "changed), or `idempotency_key_reused`"),
            "503": err("`state_store_unavailable`: the store holds a document this "
                       "instance cannot verify (its key is not the fleet's: nothing written), "
                       "or cannot be reached")}}}}
