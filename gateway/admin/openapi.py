"""The OpenAPI 3.1 document of the admin API (served at GET /openapi.json).

Owns the machine-readable description of every admin endpoint: its scope, request body
(unknown fields are refused), its answers and error bodies. Pure data; kept next to the
handlers it describes and checked against the live API by schemathesis in the tests.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.openapi_drills import drill_paths
from gateway.admin.openapi_parts import (
    APPROVAL,
    APPROVAL_ITEM,
    ERROR,
    GLASS,
    NAME,
    REASON,
    RECEIPT,
    SELECTOR_BODY,
    auth_errors,
    err,
    local_kill,
    open_get,
    step,
    write,
)
from gateway.admin.openapi_paths import alertmanager, audit_trim, console, shadow, state_vouch
from gateway.admin.statusparts import ROUTES_PARAM

#: the rollback's refusals (409, nothing changed), by `error.type`
ROLLBACK_409 = (
    "409 `no_previous_stable`: no earlier stable in the route's history to go back to, "
    "other than versions rolled off by rollbacks (named in the message; status: "
    "`rolled_off`); `rolled_back`: a rollback without `to` on a route already rolled back; "
    "`target_killed`: the version rolled back to is killed (the route would serve "
    "nothing): lift its kill first, or name another `to` (a route's or the global kill "
    "does not refuse a rollback); "
    "`artifact_changed`: the version's recorded artifact differs from the config's.")

__all__ = ["document"]


def _readyz(op: dict[str, Any]) -> dict[str, Any]:
    """/readyz's query: a drill's question (domain/readyzproof.py), both or neither."""
    op["get"]["parameters"] = [
        {"name": "drill", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"}},
        {"name": "nonce", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"}}]
    return op


def document(routes: list[str] | None = None, versions: list[str] | None = None) -> dict[str, Any]:
    """The document; with the config's route and version names as enums when given."""
    obj = {"type": "object"}
    route_s = {**NAME, "enum": routes} if routes else NAME
    version_s = {**NAME, "enum": versions} if versions else NAME
    props: dict[str, Any] = dict(SELECTOR_BODY["properties"])
    selector = {**SELECTOR_BODY, "properties": {**props, "route": route_s,
                                                 "version": version_s}}
    kill = {**selector, "properties": {**selector["properties"],
                                       "abort_inflight": {"type": "boolean"}}}
    unkill = {**selector, "properties": {**selector["properties"], "break_glass": GLASS,
                                         # a kill's `id` from /v1/status: lift that one only
                                         "kill": {"type": "string", "minLength": 1,
                                                  "maxLength": 64}}}
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
            "schemas": {"Error": ERROR, "Receipt": RECEIPT, "ApprovalRequest": APPROVAL},
        },
        "paths": {
            "/healthz": open_get("liveness", obj),
            "/readyz": _readyz(open_get(
                "readiness: config loaded and state synced (`reason`: why not: starting, "
                "draining, state_unknown, state_unverifiable); with `drill` and `nonce` (a "
                "drill's question) the answer adds `proof` {kid, mac}: see POST /v1/drills "
                "`readyz_keys`", obj,
                extra={"503": {"description": "not ready", "content": {
                    "application/json": {"schema": obj}}},
                    "400": {"description": "a malformed drill question"}})),
            "/metrics": open_get("Prometheus metrics", {"type": "string"}, "text/plain"),
            "/openapi.json": open_get("this document", obj),
            "/v1/status": {"get": {
                "summary": "what this instance enforces: routes, weights, kills, history, store",
                "description": "each route also lists `rolled_off`: the versions rollbacks "
                               "took off it ({version, artifact, kind, actor, time}), never "
                               "the target of a rollback without `to` or of an automatic one "
                               "until promote, weights or rollback --to names them; "
                               "`overrides_unrouted`: overrides latched on a route this "
                               "config lacks (in force again if the name comes back; "
                               "release drops one); an override's `drill`: null, or the "
                               "open drill whose injection it is ({id, over_latch}: "
                               "whether its restore puts a latch of the route's own back; "
                               "without one a reload may drop the route); `identities`: "
                               "the artifact recorded for each version name ever seen "
                               "({route: {version: {artifact, time}}}). Answered with a "
                               "strong ETag; If-None-Match with it answers 304 (no body) "
                               "while the document is the same",
                "parameters": [{"name": "fields", "in": "query", "required": False,
                                "schema": {"enum": ["all", "stable", "index"]},
                                "description": "stable: without what changes on every call "
                                "(`instances`; `store.staleness_ms` is null unless `stale`), "
                                "so that the ETag holds while nothing changed (the console's); "
                                "index: as stable, with `route_etags` ({route: tag}, a tag "
                                "per route's part) in place of `routes`"},
                               {"name": "routes", "in": "query", "required": False,
                                "schema": {"type": "string",
                                           "pattern": "^" + ROUTES_PARAM + "$"},
                                "description": "only these routes (comma-separated) in "
                                "`routes`, with their `route_etags`; 404 unknown_route for "
                                "a name this instance's config lacks"}],
                "security": [{"bearer": []}], "x-scope": "killgate:read",
                "responses": {"200": {"description": "status", "content": {"application/json": {
                    # (`routes` in every answer but ?fields=index's: `route_etags` there)
                    "schema": {"type": "object", "required": ["instance", "generation",
                                                              "store", "config", "kills"]}}}},
                              "304": {"description": "not modified (If-None-Match)"},
                              "400": err("a bad `fields` or `routes` value"),
                              "404": err("unknown_route: `routes` names a route this "
                                         "instance's config lacks"),
                              **auth_errors(False)}}},
            "/v1/config": {"get": {
                "summary": "the config this instance runs (for `killgate diff`)",
                "security": [{"bearer": []}], "x-scope": "killgate:read",
                "responses": {"200": {"description": "config", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["digest", "config"]}}}},
                              **auth_errors(False)}}},
            "/v1/audit": {"get": {
                "summary": "audit events, newest first", "security": [{"bearer": []}],
                "x-scope": "killgate:read",
                "parameters": [
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "before", "in": "query", "required": False,
                     "description": "the previous page's `next` (a redis stream id, or an "
                     "event id or line-N, as this store gives out); another is 400 "
                     "`bad_cursor`, one past the trail's start an empty page",
                     "schema": {"type": "string"}}],
                "responses": {"200": {"description": "a page", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["events", "next"], "properties": {
                        "events": {"type": "array", "items": {"type": "object"}},
                        "next": {"type": ["string", "null"]},
                        "head": {"type": ["string", "null"], "description":
                                 "the newest event's hash as recorded apart from the trail "
                                 "(read before the events): `audit verify` checks that the "
                                 "events reach it"}}}}}},
                    **auth_errors(False),
                    "400": err("a bad `limit`, or `bad_cursor`: `before` is no cursor this "
                               "store gives out (take the previous page's `next`)")}}},
            **audit_trim(REASON),
            **state_vouch(REASON),
            **console(),
            "/v1/routes/{route}/shadow": shadow(route_s),
            "/v1/kill": {"post": local_kill(write(
                "set a kill flag; every instance enforces it (never waits for approval)",
                "killgate:kill", kill, gated=False))},
            "/v1/unkill": {"post": write("lift a kill flag (the only way a kill is lifted)",
                                          "killgate:kill", unkill)},
            "/v1/routes/{route}/rollback": {"post": {**write(
                "make `to` (default: the previous stable) stable with 100%", "killgate:rollout",
                {"type": "object", "required": ["reason"], "additionalProperties": False,
                 "properties": {"to": version_s, "reason": REASON, "break_glass": GLASS}}, route=route_s),
                "description": ROLLBACK_409}},
            "/v1/routes/{route}/promote": {"post": write(
                "make `version` stable with 100%", "killgate:rollout",
                {"type": "object", "required": ["version", "reason"],
                 "additionalProperties": False,
                 "properties": {"version": version_s, "reason": REASON,
                                "break_glass": GLASS}}, route=route_s)},
            "/v1/routes/{route}/weights": {"put": write(
                "runtime weight override (latched until release)", "killgate:rollout",
                {"type": "object", "required": ["weights", "reason"],
                 "additionalProperties": False,
                 "properties": {"weights": {"type": "object", "minProperties": 1,
                                            "additionalProperties": {"type": "number",
                                                                     "minimum": 0}},
                                "reason": REASON, "break_glass": GLASS}}, route=route_s)},
            "/v1/alerts/alertmanager": {"post": alertmanager()},
            "/v1/routes/{route}/release": {"post": write(
                "drop the route's runtime overrides: the config file governs again",
                "killgate:rollout",
                {"type": "object", "required": ["reason"], "additionalProperties": False,
                 "properties": {"reason": REASON, "break_glass": GLASS}}, route=route_s)},
            "/v1/approvals": {"get": {
                "summary": "open two-person approval requests (without killgate:read: those "
                           "the token may approve)", "security": [{"bearer": []}],
                "x-scope": "killgate:read",
                "responses": {"200": {"description": "open requests", "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["approvals"], "properties": {
                            "approvals": {"type": "array", "items": APPROVAL_ITEM}}}}}},
                    **auth_errors(False)}}},
            "/v1/approvals/{id}/approve": {"post": step(
                "approve a request (another principal than the requester); the last approval "
                "applies the change", {"hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                       "reason": REASON}, approve=True)},
            "/v1/approvals/{id}/decline": {"post": step(
                "decline a request: it is dropped and nothing changes", {"reason": REASON})},
            # drill writes are never held for approval (no 202)
            **drill_paths(lambda summary, scope, body: write(summary, scope, body, gated=False),
                          REASON, auth_errors, route_s, version_s),
        },
    }
