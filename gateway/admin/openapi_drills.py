"""The OpenAPI description of the drill endpoints (admin/drills.py), merged into the
admin API's document by `admin.openapi`. Pure data."""

from __future__ import annotations

from typing import Any

__all__ = ["drill_paths"]

_DRILL_ID = {"name": "drill", "in": "path", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
_DURATION = {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)$"}


def _op(summary: str, scope: str, body: dict[str, Any], writes: dict[str, Any],
        drill: bool = True) -> dict[str, Any]:
    op = writes | {"summary": summary, "x-scope": scope,
                   "requestBody": {"required": True,
                                   "content": {"application/json": {"schema": body}}}}
    if drill:
        op["parameters"] = [_DRILL_ID, *op["parameters"]]
    return op


def drill_paths(write: Any, reason: dict[str, Any], auth_errors: Any, route_s: dict[str, Any],
                version_s: dict[str, Any]) -> dict[str, Any]:
    """`write(summary, scope, body)` builds a write operation of the main document."""
    base = write("", "killgate:drill", {})
    scope = ("killgate:drill (on a production route, an injection also needs the scope of "
             "the action: killgate:kill or killgate:rollout; a global kill always does)")
    return {
        "/v1/drills": {
            "get": {"summary": "open drills, the last result per kind and route, and past "
                               "drills (drill.end audit events, newest first)",
                    "security": [{"bearer": []}], "x-scope": "killgate:read",
                    "parameters": [{"name": "limit", "in": "query", "required": False,
                                    "schema": {"type": "integer", "minimum": 1,
                                               "maximum": 200}}],
                    "responses": {"200": {"description": "drills", "content": {
                        "application/json": {"schema": {
                            "type": "object", "required": ["open", "history", "last"]}}}},
                                  **auth_errors(False)}},
            "post": _op("open a drill on a route: records the route's state (drill.start); "
                        "the answer's `readyz_keys` (key id -> hex key, with a state signing "
                        "key) check the `proof` of an instance's `/readyz?drill=&nonce=`",
                        scope, {
                            "type": "object", "required": ["kind", "route", "reason"],
                            "additionalProperties": False,
                            "properties": {
                                "kind": {"enum": ["kill", "rollback", "failover", "store_loss"]},
                                "route": route_s, "version": version_s,
                                "production": {"type": "boolean", "description":
                                               "required to drill on a route users are "
                                               "served by (not a drill route)"},
                                "duration": _DURATION, "reason": reason}}, base, drill=False),
        },
        "/v1/drills/{drill}/inject": {"post": _op(
            "inject the drill's fault: a kill (kill, store_loss), a rollback, or a fault that "
            "only requests carrying the returned drill token meet (failover)", scope, {
                "type": "object", "required": ["reason"], "additionalProperties": False,
                "properties": {"scope": {"enum": ["global", "route", "version"]},
                               "to": version_s, "ttl": _DURATION, "reason": reason}}, base)},
        "/v1/drills/{drill}/restore": {"post": _op(
            "undo what the drill changed and is still as it left it (drill.restore)", scope,
            {"type": "object", "required": ["reason"], "additionalProperties": False,
             "properties": {"reason": reason}}, base)},
        "/v1/drills/{drill}/end": {"post": _op(
            "restore if needed, then close the drill with its verdict (drill.end); 409 "
            "verdict_refused: `passed` for a drill that made no change, or whose restore "
            "kept someone's change", scope,
            {"type": "object", "required": ["verdict", "reason"], "additionalProperties": False,
             "properties": {"verdict": {"enum": ["passed", "failed", "aborted", "skipped"]},
                            "summary": {"type": "object"}, "reason": reason}}, base)},
    }
