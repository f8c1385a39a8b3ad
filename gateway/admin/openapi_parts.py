"""The building blocks of the admin API's OpenAPI document: shared schemas and operations.

Owns the error body, the receipt, an approval request, the reason and name schemas, the
errors every authenticated call may answer, and the shapes of a write (wait, Idempotency-
Key, 200 receipt, 202 approval), an approval step, a read and an open GET. Pure data.
"""

from __future__ import annotations

from typing import Any

__all__ = ["APPROVAL", "APPROVAL_ITEM", "ERROR", "GLASS", "NAME", "REASON", "RECEIPT",
           "SELECTOR_BODY", "auth_errors", "err", "local_kill", "open_get", "read", "step", "write"]

ERROR = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["type", "message"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
}
RECEIPT = {
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
        "still_killed_by": {"type": "string", "description": "an unkill: the key of a wider "
                            "kill (global, or the version's route) that still stops the "
                            "same traffic"},
        "still_killed_locally": {
            "type": "object", "description": "an unkill: the emergency local kill that "
            "still stops the same traffic on the instance that answered: not in the store "
            "yet (merged into it as a kill when it answers), or merged already (`in_store`: "
            "that generation) but still in a journal that cannot be rewritten",
            "properties": {"kill": {"type": "string"}, "id": {"type": "string"},
                           "actor": {"type": "string"}, "time": {"type": "string"},
                           "in_store": {"type": "integer"}, "why": {"type": "string"}}},
        "to": {"type": "string", "description": "a rollback: the version it made stable "
               "(without `to`, the previous stable it went to)"},
        "warnings": {"type": "array", "items": {"type": "string"}, "description": "a "
                     "release: the versions a rollback rolled off that serve again (the "
                     "file's stable, or a weight above 0), by whom and when"},
    },
}
APPROVAL_ITEM: dict[str, Any] = {
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
                     "names it, and a stored change that does not match it is refused"},
            "yours": {"type": "boolean", "description": "GET /v1/approvals: the caller asked "
                      "for it (its approval would be refused: 403 self_approval)"},
            "approved_by_you": {"type": "boolean", "description": "GET /v1/approvals: the "
                                "caller approved it already"}}}
APPROVAL = {"type": "object", "required": ["approval"],
             "properties": {"approval": APPROVAL_ITEM, "you_may_approve": {
                 "type": "boolean", "description": "true when this is another principal's "
                 "open request for the same change, which the caller may approve"}}}
GLASS = {"type": "boolean", "description": "skip a required approval (scope "
          "killgate:breakglass; loudly audited)"}
REASON = {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"\S",
           "description": "why (recorded in the audit trail, never shown to clients)"}
NAME = {"type": "string", "minLength": 1, "maxLength": 64}
SELECTOR_BODY: dict[str, Any] = {
    "type": "object", "required": ["scope", "reason"], "additionalProperties": False,
    "properties": {"scope": {"enum": ["global", "route", "version"]}, "route": NAME,
                   "version": NAME, "reason": REASON},
}


def err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref":
                                                                             "#/components/schemas/Error"}}}}


def auth_errors(write: bool) -> dict[str, Any]:
    out = {"401": err("missing or invalid token"), "403": err("the token lacks the scope"),
           "429": err("too many token checks from this address (a token used before is "
                       "still accepted)"),
           "431": err("the request head is too large (the listener's limit)"),
           "503": err("auth not configured, or the state store / audit trail is unavailable "
                       "(nothing was changed)")}
    if write:
        out |= {"400": err("bad input"), "404": err("unknown route or version"),
                "409": err("conflicting state"), "413": err("body too large"),
                "415": err("not JSON"),
                "503": err("auth not configured, or the state store / audit trail is "
                            "unavailable (nothing was changed), or `not_durable`: the change "
                            "is in force but fewer than state.min_replicas replicas confirmed "
                            "it (retry the same call; a drill open's names its `drill`), or "
                            "`state_store_loading` / "
                            "`state_store_busy`: redis is loading its dataset / a script runs "
                            "past its time limit (Retry-After; nothing was changed), or "
                            "`store_refuses_writes`: redis's min-replicas-to-write refuses "
                            "every write (nothing was changed; a kill: ?local=1)")}
    else:
        out |= {"400": err("bad query")}
    return out


def local_kill(op: dict[str, Any]) -> dict[str, Any]:
    """/v1/kill's `local` opt-in and its 202 (admin/localkill.py)."""
    op["parameters"].insert(1, {
        "name": "local", "in": "query", "required": False, "description":
        "1: when the state store cannot be reached, take an emergency kill on the instance "
        "that answers (and its --workers group) instead of 503 state_store_unavailable: "
        "journaled, enforced at once, merged into the store when it answers",
        "schema": {"type": "string", "enum": ["1", "true", "0", "false"]}})
    op["responses"]["202"] = {
        "description": "the store could not commit: taken as a local kill (`local`: true), "
                       "enforced here only until merged into the store",
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["kill", "changed", "local", "id", "instance"],
            "properties": {"kill": {"type": "string"}, "changed": {"type": "boolean"},
                           "local": {"type": "boolean"}, "id": {"type": "string"},
                           "instance": {"type": "string"}, "store": {"type": "string"},
                           "enforced": {"type": "string"}, "merge": {"type": "string"}}}}}}
    return op


def write(summary: str, scope: str, body: dict[str, Any],
           route: dict[str, Any] | None = None, gated: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "security": [{"bearer": []}], "x-scope": scope,
        "parameters": [
            {"name": "wait", "in": "query", "required": False, "description":
             "how long to wait for every instance to apply the change (duration, <= 30s)",
             "schema": {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s)$"}},
            {"name": "Idempotency-Key", "in": "header", "required": False, "schema":
             {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[ -~]+$"}},
            {"name": "X-Killgate-Subject", "in": "header", "required": False, "description":
             "the principal who prepared the request (the console sends it): signed in as "
             "anyone else, it is refused, 409 principal_changed, nothing done",
             "schema": {"type": "string", "minLength": 1}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "applied; the propagation receipt",
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/Receipt"}}}},
                      **auth_errors(True)},
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


def step(summary: str, props: dict[str, Any], approve: bool = False) -> dict[str, Any]:
    op = write(summary, "killgate:kill or killgate:rollout (the action's)", {
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


def open_get(summary: str, schema: dict[str, Any], ctype: str = "application/json",
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [], "responses": {
        "200": {"description": "ok", "content": {ctype: {"schema": schema}}}, **(extra or {})}}}


def read(summary: str, required: list[str], props: dict[str, Any],
          scope: str | None = "killgate:read") -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": props}
    op: dict[str, Any] = {"summary": summary, "security": [{"bearer": []}],
                          "responses": {"200": {"description": "ok", "content": {
                              "application/json": {"schema": schema}}},
                              **auth_errors(False)}}
    if scope:
        op["x-scope"] = scope
    else:
        op["security"] = [{"bearer": []}, {}]  # the token is optional
    return {"get": op}
