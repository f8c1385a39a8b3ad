"""The OpenAPI 3.1 document of the admin API (served at GET /openapi.json).

Owns the machine-readable description of every admin endpoint: its scope, request body
(unknown fields are refused), its answers and error bodies. Pure data; kept next to the
handlers it describes and checked against the live API by schemathesis in the tests.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.openapi_drills import drill_paths

__all__ = ["document"]

_ERROR = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["type", "message"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
}
_RECEIPT = {
    "type": "object", "required": ["generation", "applied"],
    "properties": {
        "generation": {"type": "integer", "minimum": 0},
        "applied": {
            "type": "object", "required": ["instances", "acked", "elapsed_ms", "pending"],
            "properties": {"instances": {"type": "integer"}, "acked": {"type": "integer"},
                           "elapsed_ms": {"type": "number"},
                           "pending": {"type": "array", "items": {"type": "string"}}}},
        "audit_id": {"type": "string"},
        "changed": {"type": "boolean",
                    "description": "false when it was already so (nothing was recorded)"},
    },
}
_APPROVAL_ITEM: dict[str, Any] = {
        "type": "object",
        "required": ["id", "action", "needs", "approved_by", "expires"],
        "properties": {
            "id": {"type": "string"}, "action": {"type": "string"}, "gate": {"type": "string"},
            "target": {"type": "object"}, "args": {"type": "object"},
            "reason": {"type": "string"}, "requested_by": {"type": "string"},
            "needs": {"type": "integer", "minimum": 1},
            "approved_by": {"type": "array", "items": {"type": "string"}},
            "created": {"type": "string"}, "expires": {"type": "string"},
            "hash": {"type": "string", "description": "SHA-256 of the change: an approval "
                     "names it, and a stored change that does not match it is refused"}}}
_APPROVAL = {"type": "object", "required": ["approval"],
             "properties": {"approval": _APPROVAL_ITEM}}
_GLASS = {"type": "boolean", "description": "skip a required approval (scope "
          "killgate:breakglass; loudly audited)"}
_REASON = {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"\S",
           "description": "why (recorded in the audit trail, never shown to clients)"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 64}
_SELECTOR_BODY: dict[str, Any] = {
    "type": "object", "required": ["scope", "reason"], "additionalProperties": False,
    "properties": {"scope": {"enum": ["global", "route", "version"]}, "route": _NAME,
                   "version": _NAME, "reason": _REASON},
}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref":
                                                                             "#/components/schemas/Error"}}}}


def _auth_errors(write: bool) -> dict[str, Any]:
    out = {"401": _err("missing or invalid token"), "403": _err("the token lacks the scope"),
           "429": _err("too many token checks from this address (a token used before is "
                       "still accepted)"),
           "431": _err("the request head is too large (the listener's limit)"),
           "503": _err("auth not configured, or the state store / audit trail is unavailable "
                       "(nothing was changed)")}
    if write:
        out |= {"400": _err("bad input"), "404": _err("unknown route or version"),
                "409": _err("conflicting state"), "413": _err("body too large"),
                "415": _err("not JSON"),
                "503": _err("auth not configured, or the state store / audit trail is "
                            "unavailable (nothing was changed), or `not_durable`: the change "
                            "is in force but fewer than state.min_replicas replicas confirmed "
                            "it (retry the same call)")}
    else:
        out |= {"400": _err("bad query")}
    return out


def _write(summary: str, scope: str, body: dict[str, Any],
           route: dict[str, Any] | None = None, gated: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "security": [{"bearer": []}], "x-scope": scope,
        "parameters": [
            {"name": "wait", "in": "query", "required": False, "description":
             "how long to wait for every instance to apply the change (duration, <= 30s)",
             "schema": {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s)$"}},
            {"name": "Idempotency-Key", "in": "header", "required": False, "schema":
             {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[ -~]+$"}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "applied; the propagation receipt",
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/Receipt"}}}},
                      **_auth_errors(True)},
    }
    if gated:
        op["responses"]["202"] = {
            "description": "needs approval by another principal (approvals: config): nothing "
                           "changed yet", "content": {"application/json": {"schema": {
                               "$ref": "#/components/schemas/ApprovalRequest"}}}}
    if route is not None:
        op["parameters"].insert(0, {"name": "route", "in": "path", "required": True,
                                    "schema": route})
    return op


def _step(summary: str, props: dict[str, Any], approve: bool = False) -> dict[str, Any]:
    op = _write(summary, "killgate:kill or killgate:rollout (the action's)", {
        "type": "object", "additionalProperties": False, "properties": props}, gated=False)
    op["parameters"].insert(0, {"name": "id", "in": "path", "required": True,
                                "schema": {"type": "string"}})
    op["requestBody"]["required"] = False
    if approve:
        op["responses"]["202"] = {"description": "approval recorded; more are needed",
                                  "content": {"application/json": {"schema": {
                                      "$ref": "#/components/schemas/ApprovalRequest"}}}}
    op["responses"]["200"] = {"description": "applied (the receipt) or declined",
                              "content": {"application/json": {"schema": {"type": "object"}}}}
    return op


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
                             "ignored", "unmapped", "refused", "deferred"]},
        "message": {"type": "string"}, "audit_id": {"type": "string"},
        "applied": {"type": "object"}},
}


def _alertmanager() -> dict[str, Any]:
    return {
        "summary": "Alertmanager's webhook (payload version 4): alerts labelled "
                   "killgate_action kill|rollback with route (and version) act; a resolved "
                   "alert never lifts anything; a firing alert acts once (fingerprint + "
                   "startsAt); mode observe records what would have been done",
        "security": [{"bearer": []}], "x-scope": "killgate:alert",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["version", "receiver", "status", "alerts"],
            "properties": {"version": {"const": "4"},
                           "receiver": {"type": "string", "minLength": 1, "maxLength": 128,
                                        "pattern": "^[ -~]+$"},
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
            **_auth_errors(True),
            "404": _err("alerts.alertmanager is not configured here"),
            "503": _err("too_many_alerts: more new firing alerts than one instance acts on "
                        "(those beyond were not acted on; Alertmanager retries), or the "
                        "state store is unavailable")},
    }


def _open(summary: str, schema: dict[str, Any], ctype: str = "application/json",
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [], "responses": {
        "200": {"description": "ok", "content": {ctype: {"schema": schema}}}, **(extra or {})}}}


def document(routes: list[str] | None = None, versions: list[str] | None = None) -> dict[str, Any]:
    """The document; with the config's route and version names as enums when given."""
    obj = {"type": "object"}
    route_s = {**_NAME, "enum": routes} if routes else _NAME
    version_s = {**_NAME, "enum": versions} if versions else _NAME
    props: dict[str, Any] = dict(_SELECTOR_BODY["properties"])
    selector = {**_SELECTOR_BODY, "properties": {**props, "route": route_s,
                                                 "version": version_s}}
    kill = {**selector, "properties": {**selector["properties"],
                                       "abort_inflight": {"type": "boolean"}}}
    unkill = {**selector, "properties": {**selector["properties"], "break_glass": _GLASS}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "killgate admin API", "version": "1",
                 "description": "Kill switch, rollbacks and traffic shifts for an inference "
                                "gateway. Scopes: killgate:read, killgate:kill, "
                                "killgate:rollout, killgate:alert (the Alertmanager webhook "
                                "only), killgate:drill (recovery drills), killgate:breakglass "
                                "(skips a required approval), killgate:admin (all but "
                                "killgate:breakglass)."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
            "schemas": {"Error": _ERROR, "Receipt": _RECEIPT, "ApprovalRequest": _APPROVAL},
        },
        "paths": {
            "/healthz": _open("liveness", obj),
            "/readyz": _open("readiness: config loaded and state synced", obj,
                             extra={"503": {"description": "not ready", "content": {
                                 "application/json": {"schema": obj}}}}),
            "/metrics": _open("Prometheus metrics", {"type": "string"}, "text/plain"),
            "/openapi.json": _open("this document", obj),
            "/v1/status": {"get": {
                "summary": "what this instance enforces: routes, weights, kills, history, store",
                "security": [{"bearer": []}], "x-scope": "killgate:read",
                "responses": {"200": {"description": "status", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["instance", "generation",
                                                              "store", "config", "kills",
                                                              "routes"]}}}},
                              **_auth_errors(False)}}},
            "/v1/config": {"get": {
                "summary": "the config this instance runs (for `killgate diff`)",
                "security": [{"bearer": []}], "x-scope": "killgate:read",
                "responses": {"200": {"description": "config", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["digest", "config"]}}}},
                              **_auth_errors(False)}}},
            "/v1/audit": {"get": {
                "summary": "audit events, newest first", "security": [{"bearer": []}],
                "x-scope": "killgate:read",
                "parameters": [
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "before", "in": "query", "required": False,
                     "schema": {"type": "string"}}],
                "responses": {"200": {"description": "a page", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["events", "next"], "properties": {
                        "events": {"type": "array", "items": {"type": "object"}},
                        "next": {"type": ["string", "null"]},
                        "head": {"type": ["string", "null"], "description":
                                 "the newest event's hash as recorded apart from the trail "
                                 "(read before the events): `audit verify` checks that the "
                                 "events reach it"}}}}}},
                    **_auth_errors(False)}}},
            **_console(),
            "/v1/routes/{route}/shadow": _shadow(route_s),
            "/v1/kill": {"post": _write("set a kill flag; every instance enforces it (never "
                                        "waits for approval)", "killgate:kill", kill,
                                        gated=False)},
            "/v1/unkill": {"post": _write("lift a kill flag (the only way a kill is lifted)",
                                          "killgate:kill", unkill)},
            "/v1/routes/{route}/rollback": {"post": _write(
                "make `to` (default: the previous stable) stable with 100%", "killgate:rollout",
                {"type": "object", "required": ["reason"], "additionalProperties": False,
                 "properties": {"to": version_s, "reason": _REASON, "break_glass": _GLASS}}, route=route_s)},
            "/v1/routes/{route}/promote": {"post": _write(
                "make `version` stable with 100%", "killgate:rollout",
                {"type": "object", "required": ["version", "reason"],
                 "additionalProperties": False,
                 "properties": {"version": version_s, "reason": _REASON,
                                "break_glass": _GLASS}}, route=route_s)},
            "/v1/routes/{route}/weights": {"put": _write(
                "runtime weight override (latched until release)", "killgate:rollout",
                {"type": "object", "required": ["weights", "reason"],
                 "additionalProperties": False,
                 "properties": {"weights": {"type": "object", "minProperties": 1,
                                            "additionalProperties": {"type": "number",
                                                                     "minimum": 0}},
                                "reason": _REASON, "break_glass": _GLASS}}, route=route_s)},
            "/v1/alerts/alertmanager": {"post": _alertmanager()},
            "/v1/routes/{route}/release": {"post": _write(
                "drop the route's runtime overrides: the config file governs again",
                "killgate:rollout",
                {"type": "object", "required": ["reason"], "additionalProperties": False,
                 "properties": {"reason": _REASON, "break_glass": _GLASS}}, route=route_s)},
            "/v1/approvals": {"get": {
                "summary": "open two-person approval requests", "security": [{"bearer": []}],
                "x-scope": "killgate:read",
                "responses": {"200": {"description": "open requests", "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["approvals"], "properties": {
                            "approvals": {"type": "array", "items": _APPROVAL_ITEM}}}}}},
                    **_auth_errors(False)}}},
            "/v1/approvals/{id}/approve": {"post": _step(
                "approve a request (another principal than the requester); the last approval "
                "applies the change", {"hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                       "reason": _REASON}, approve=True)},
            "/v1/approvals/{id}/decline": {"post": _step(
                "decline a request: it is dropped and nothing changes", {"reason": _REASON})},
            # drill writes are never held for approval (no 202)
            **drill_paths(lambda summary, scope, body: _write(summary, scope, body, gated=False),
                          _REASON, _auth_errors, route_s, version_s),
        },
    }


def _read(summary: str, required: list[str], props: dict[str, Any],
          scope: str | None = "killgate:read") -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": props}
    op: dict[str, Any] = {"summary": summary, "security": [{"bearer": []}],
                          "responses": {"200": {"description": "ok", "content": {
                              "application/json": {"schema": schema}}},
                              **_auth_errors(False)}}
    if scope:
        op["x-scope"] = scope
    else:
        op["security"] = [{"bearer": []}, {}]  # the token is optional
    return {"get": op}


def _shadow(route_s: dict[str, Any]) -> dict[str, Any]:
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
    op = _read(
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
         "dropped": {"type": "integer", "description": "copies dropped at max_inflight"},
         "outcomes": counts, "copies": counts, "failures": counts, "differences": counts,
         "latency_ms": {"type": "object", "properties": {"primary": lat, "shadow": lat}},
         "length_change": {"type": ["number", "null"]},
         "noise": {"type": "object", "properties": {"pairs": {"type": "integer"},
                                                    "paths": counts}},
         "instances": {"type": "integer"},
         "gate": {"type": "object", "description": "with analysis.min_shadow_agreement: "
                                                   "whether the shadow may get traffic"},
         "disagreements": {"type": "array", "items": item}})
    get = op["get"]
    get["parameters"] = [
        {"name": "route", "in": "path", "required": True, "schema": route_s},
        {"name": "limit", "in": "query", "required": False,
         "description": "disagreements listed, newest first (default 20)",
         "schema": {"type": "integer", "minimum": 1, "maximum": 100}}]
    get["responses"]["404"] = _err("unknown route, or the route has no shadow")
    return op


def _console() -> dict[str, Any]:
    """What the operator console (GET /ui/) reads besides status and audit."""
    num_list = {"type": "array", "items": {"type": ["number", "null"]}}
    return {
        "/ui/": _open("the operator console (static page; its API calls carry your token)",
                      {"type": "string"}, "text/html"),
        "/v1/whoami": _read(
            "the subject and scopes of the presented token (any valid token); without an "
            "Authorization header: subject null (how the console detects a signing proxy)",
            ["subject", "scopes", "can"],
            {"subject": {"type": ["string", "null"]},
             "scopes": {"type": "array", "items": {"type": "string"}},
             "can": {"type": "object", "additionalProperties": {"type": "boolean"},
                     "description": "read, kill, rollout, alert, drill, admin, breakglass"}}, scope=None),
        "/v1/fleet": _read(
            "every instance heard from: generation, config digest, heartbeat age; this "
            "instance's store connection, staleness and fail-closed state",
            ["instance", "generation", "config_digest", "store", "instances", "live"],
            {"instance": {"type": "string"}, "generation": {"type": "integer"},
             "config_digest": {"type": "string"}, "lease_s": {"type": "number"},
             "store": {"type": "object"}, "fleet_error": {"type": ["string", "null"]},
             "live": {"type": "integer"}, "config_digests": {"type": "integer"},
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
                     "seen_s_ago": {"type": ["number", "null"]}}}}}),
        "/v1/traffic": _read(
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
