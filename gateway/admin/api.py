"""Admin HTTP API (CONTRACT §4) on its own listener, separate from the data plane.

Owns the admin routes, request validation, and the mapping of ApiError / state errors
to JSON error bodies. Handlers are methods of one object built with the gateway's parts;
state changes go through `Sync.write` (audit first, then the change) and answer
with a propagation receipt. Denied attempts are counted, rate limited per address, and
audited (tallied, then written in the background by `DeniedLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.admin import openapi
from gateway.admin.auth import Authenticator, FailureLimiter, Principal
from gateway.admin.denied import DeniedLog
from gateway.admin.drills import DrillApi
from gateway.admin.tracing import TRACE_ID
from gateway.config import RouteConfig, parse_duration
from gateway.configfile import LoadedConfig
from gateway.domain import overrides
from gateway.domain.audit import AuditDraft, clean_text, utc_now
from gateway.domain.diff import config_dict
from gateway.domain.overrides import effective_stable
from gateway.domain.statedoc import Change, KillFlag, RouteOverride, StateDoc, kill_key
from gateway.errors import (
    ApiError,
    AuditError,
    ConflictingState,
    DomainError,
    InvalidChange,
    NotDurable,
    StateError,
    StoreOutcomeUnknown,
    StoreUnavailable,
    Unauthenticated,
    UnknownDrill,
    UnknownVersion,
)
from gateway.log import event

if TYPE_CHECKING:
    from gateway.app import Gateway


def _override_json(ov: RouteOverride | None, stable: str) -> dict[str, Any]:
    if ov is None:
        return {"latched": False, "stable": stable}
    return {"latched": True, "kind": ov.kind, "stable": ov.stable, "weights": ov.weights}

__all__ = ["AdminApi", "json_error"]

log = logging.getLogger("killgate.admin")
MAX_WAIT = 30.0
IDEMPOTENCY_TTL = 24 * 3600.0
KILL_FIELDS = frozenset({"scope", "route", "version", "reason"})


def _endpoint(request: web.Request) -> str:
    """The route pattern a request matched (`/v1/routes/{route}/rollback`): what callers
    chose, never their text."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else clean_text(request.path, 256)


def json_error(status: int, type_: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message}}, status=status)


#: the domain's refusals as HTTP statuses (anything else it refuses: 409)
_DOMAIN_STATUS: dict[type[DomainError], int] = {UnknownVersion: 404, InvalidChange: 400,
                                                ConflictingState: 409, UnknownDrill: 404}


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        resp = json_error(exc.status, exc.type, exc.message)
        if exc.status == 429:
            resp.headers["Retry-After"] = "1"  # (FailureLimiter.retry)
        return resp
    except DomainError as exc:
        return json_error(_DOMAIN_STATUS.get(type(exc), 409), exc.type, exc.message)
    except AuditError as exc:
        event(log, "audit_write_failed", logging.ERROR, error=str(exc))
        return json_error(503, "audit_unavailable",
                          "the audit trail cannot be written, so the action was not applied")
    except StoreOutcomeUnknown as exc:
        return json_error(503, "outcome_unknown",
                          f"the state store took the change but did not confirm it ({exc}): it "
                          "may be in force; check `killgate status` (the generation) before "
                          "retrying, or retry with the same Idempotency-Key")
    except StoreUnavailable as exc:
        return json_error(503, "state_store_unavailable",
                          f"the state store cannot be reached, nothing was changed ({exc})")
    except NotDurable as exc:
        resp = json_error(503, "not_durable", str(exc))
        resp.headers["Retry-After"] = "1"
        return resp
    except StateError as exc:
        return json_error(409, "conflict", str(exc))
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "body_too_large", "the admin request body is too large")
    except web.HTTPException as exc:
        if exc.status >= 400:
            resp = json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
            if "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        raise


class AdminApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        cfg = gw.loaded.config.admin
        self.auth = Authenticator(cfg.auth, gw.loaded.resolve)
        self.limiter = FailureLimiter()
        self.denied = DeniedLog(self._append_audit, gw.metrics)
        self.drills: DrillApi | None = None  # the /v1/drills endpoints (set by the app)
        if self.auth.problem:
            event(log, "admin_auth_not_configured", logging.ERROR, problem=self.auth.problem)

    def reconfigure(self, loaded: LoadedConfig, checked: Authenticator | None = None) -> None:
        """A reloaded config may change the admin auth settings (not the listener).
        `checked`: the authenticator the reload was validated with (its key already read)."""
        auth = loaded.config.admin.auth
        if auth != self.auth.cfg:
            if checked is not None and checked.cfg == auth:
                self.auth = checked
            else:
                self.auth = Authenticator(auth, loaded.resolve)
            if self.auth.problem:
                event(log, "admin_auth_not_configured", logging.ERROR, problem=self.auth.problem)

    def app(self, outer: tuple[Any, ...] = ()) -> web.Application:
        """`outer`: middlewares that wrap everything (tracing), outermost first."""
        app = web.Application(middlewares=[*outer, _errors],
                              client_max_size=self.gw.loaded.config.admin.max_body_size)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/v1/status", self.status)
        r.add_get("/v1/config", self.config)
        r.add_get("/v1/audit", self.audit)
        r.add_post("/v1/kill", self.kill)
        r.add_post("/v1/unkill", self.unkill)
        r.add_post("/v1/routes/{route}/rollback", self.rollback)
        r.add_post("/v1/routes/{route}/promote", self.promote)
        r.add_put("/v1/routes/{route}/weights", self.weights)
        r.add_post("/v1/routes/{route}/release", self.release)
        r.add_post("/v1/alerts/alertmanager", self.alertmanager)
        if self.drills is not None:
            self.drills.add_routes(r)
        return app

    async def _append_audit(self, draft: AuditDraft) -> None:
        sync = self.gw.sync
        assert sync is not None
        if await sync.append_audit(draft) is None:
            raise StoreUnavailable("the state store holds no state yet; not recorded")

    # ------------------------------------------------------------------ helpers

    async def authorize(self, request: web.Request, scope: str | None) -> Principal:
        """The caller, checked like every other call (for the console's handlers)."""
        return await self._principal(request, scope)

    async def _principal(self, request: web.Request, scope: str | None) -> Principal:
        peer = request.remote or "unknown"
        principal: Principal | None = None
        try:
            limited = self.limiter.limited(peer)
            if limited and not self.limiter.may_check(peer):
                raise self.limiter.refusal()  # no token work for a flood
            try:
                principal = await self.auth.authenticate(request.headers.get("Authorization"))
            except Unauthenticated:
                if limited:  # 429 rather than 401; a valid token would have passed
                    raise self.limiter.refusal() from None
                raise
            if scope is not None:  # (None: any valid token)
                principal.require(scope)
        except ApiError as exc:
            self._denied(request, peer, scope or "(any)", principal, exc)
            raise
        return principal

    def _denied(self, request: web.Request, peer: str, scope: str, principal: Principal | None,
                exc: ApiError) -> None:
        """Count, log and (through the audit trail's tally) audit a refused call."""
        if exc.status in (401, 403):
            self.limiter.failed(peer)
        action = {401: "authn_fail", 403: "authz_fail", 429: "auth_rate_limited"}.get(exc.status)
        if action is None:  # a 503: the auth settings cannot verify anything (logged apart)
            return
        self.gw.metrics.inc("killgate_auth_failures_total", (str(exc.status),),
                            label_names=("code",))
        subject = principal.subject if principal is not None else None
        endpoint = _endpoint(request)
        if exc.status != 429:  # (429s come in floods: the tally stands for them)
            event(log, "admin_denied", logging.WARNING, status=exc.status, type=exc.type,
                  peer=peer, path=endpoint, scope=scope, subject=subject)
        self.denied.record(action, subject, peer, request.method, endpoint,
                           f"{exc.type}: {exc.message}", scope)

    @staticmethod
    async def _body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_request", "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field(s): {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(allowed))}")
        return body

    @staticmethod
    def _reason(body: dict[str, Any]) -> str:
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ApiError(400, "bad_request", "'reason' is required and must be a non-empty string")
        if len(reason) > 1024:
            raise ApiError(400, "bad_request", "'reason' is longer than 1024 characters")
        return clean_text(reason.strip())

    @staticmethod
    def _wait(request: web.Request) -> float:
        raw = request.query.get("wait", "1s")
        try:
            wait = parse_duration(raw)
        except ValueError:
            raise ApiError(400, "bad_request", f"wait={raw!r} is not a duration such as 1s") from None
        if wait > MAX_WAIT:
            raise ApiError(400, "bad_request", f"wait must be at most {MAX_WAIT:g}s")
        return wait

    def _meta(self, request: web.Request) -> tuple[str, str]:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        return clean_text(rid, 128), request.remote or "unknown"

    def _selector(self, body: dict[str, Any]) -> tuple[str, str | None, str | None]:
        scope = body.get("scope")
        if scope not in ("global", "route", "version"):
            raise ApiError(400, "bad_request", "'scope' must be one of global, route, version")
        route = body.get("route")
        version = body.get("version")
        cfg = self.gw.loaded.config
        if scope == "global":
            if route is not None or version is not None:
                raise ApiError(400, "bad_request", "a global kill takes no route or version")
            return scope, None, None
        if not isinstance(route, str) or not route:
            raise ApiError(400, "bad_request", f"scope {scope!r} needs 'route'")
        rc = cfg.route(route)
        if rc is None:
            raise ApiError(404, "unknown_route", f"no route named {route!r}")
        if scope == "route":
            if version is not None:
                raise ApiError(400, "bad_request", "a route kill takes no version; use scope 'version'")
            return scope, route, None
        if not isinstance(version, str) or not version:
            raise ApiError(400, "bad_request", "scope 'version' needs 'version'")
        if rc.version(version) is None:
            raise ApiError(404, "unknown_version", f"route {route!r} has no version {version!r}")
        return scope, route, version

    # ------------------------------------------------------------------ open endpoints

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "instance": self.gw.instance})

    async def readyz(self, request: web.Request) -> web.Response:
        gw = self.gw
        body = {"ready": gw.ready, "instance": gw.instance, "draining": gw.draining,
                "generation": gw.holder.doc.generation,
                "state": gw.sync.status() if gw.sync else None}
        return web.Response(status=200 if gw.ready else 503, text=json.dumps(body),
                            content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        self.gw.metrics.set("killgate_inflight_requests", self.gw.inflight.count)
        self.gw.metrics.set("killgate_state_generation", self.gw.holder.doc.generation)
        body, ctype = self.gw.metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"content-type": ctype,
                                                "x-content-type-options": "nosniff"})

    async def openapi(self, request: web.Request) -> web.Response:
        cfg = self.gw.loaded.config
        return web.json_response(openapi.document(
            [r.name for r in cfg.routes],
            sorted({v.name for r in cfg.routes for v in r.versions})))

    # ------------------------------------------------------------------ reads

    async def status(self, request: web.Request) -> web.Response:
        await self._principal(request, "killgate:read")
        body = self.gw.status()
        if self.gw.sync is not None:
            body["instances"] = await self.gw.sync.fleet()
        return web.json_response(body)

    async def config(self, request: web.Request) -> web.Response:
        """The config this instance runs, for `killgate diff` (no secrets live in it)."""
        await self._principal(request, "killgate:read")
        loaded = self.gw.loaded
        return web.json_response({"digest": loaded.digest,
                                  "config": config_dict(loaded.config)})

    async def audit(self, request: web.Request) -> web.Response:
        await self._principal(request, "killgate:read")
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise ApiError(400, "bad_request", "limit must be an integer") from None
        if not 1 <= limit <= 1000:
            raise ApiError(400, "bad_request", "limit must be between 1 and 1000")
        assert self.gw.sync is not None
        store = self.gw.sync.store
        head = await store.audit_head()  # first: events read after it include it
        events, nxt = await store.audit_page(limit, request.query.get("before"))
        return web.json_response({"events": events, "next": nxt, "head": head})

    # ------------------------------------------------------------------ kill switch

    async def kill(self, request: web.Request) -> web.Response:
        principal = await self._principal(request, "killgate:kill")
        body = await self._body(request, KILL_FIELDS | {"abort_inflight"})
        scope, route, version = self._selector(body)
        reason = self._reason(body)
        abort = body.get("abort_inflight", True)
        if not isinstance(abort, bool):
            raise ApiError(400, "bad_request", "'abort_inflight' must be true or false")
        wait = self._wait(request)
        rid, peer = self._meta(request)
        key = kill_key(scope, route, version)

        def change(cur: StateDoc) -> Change | None:
            existing = cur.kills.get(key)
            if existing is not None:
                if abort and not existing.abort_inflight:
                    # a kill made with --keep-inflight, now asked to cut in-flight
                    # responses too: that much changes (and is audited); who, when, why stay
                    return Change(kills={key: dataclasses.replace(existing,
                                                                  abort_inflight=True)})
                # already in force: a repeat (a retry after `outcome_unknown`, a second
                # operator) changes nothing and keeps who killed it, when and why
                return None
            # generation 0: apply_change stamps the generation the kill lands in
            flag = KillFlag(scope, route, version, principal.subject, reason,  # type: ignore[arg-type]
                            utc_now(), 0, abort)
            return Change(kills={key: flag})

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            before = cur.kills.get(key)
            return AuditDraft(principal.subject, "kill",
                              {"scope": scope, "route": route, "version": version}, reason,
                              before.public() if before else None, new.kills[key].public(),
                              rid, peer)

        return await self._write(request, principal, change, describe, wait, {"kill": key})

    async def unkill(self, request: web.Request) -> web.Response:
        principal = await self._principal(request, "killgate:kill")
        body = await self._body(request, KILL_FIELDS)
        scope, route, version = self._selector(body)
        reason = self._reason(body)
        wait = self._wait(request)
        rid, peer = self._meta(request)
        key = kill_key(scope, route, version)

        def change(cur: StateDoc) -> Change:
            if key not in cur.kills:
                raise ConflictingState("not_killed", f"there is no {scope} kill for that selector")
            return Change(kills={key: None})

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return AuditDraft(principal.subject, "unkill",
                              {"scope": scope, "route": route, "version": version}, reason,
                              cur.kills[key].public(), None, rid, peer)

        return await self._write(request, principal, change, describe, wait,
                                 {"unkill": key})

    # ------------------------------------------------------------------ alerts

    async def alertmanager(self, request: web.Request) -> web.Response:
        """Alertmanager's webhook (control/alerts.py does the work)."""
        await self._principal(request, "killgate:alert")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_request", "the body must be Alertmanager's JSON "
                                               "webhook payload") from None
        rid, peer = self._meta(request)
        return web.json_response(await self.gw.alert_receiver.receive(
            body, rid, peer, request.get(TRACE_ID, "")))

    # ------------------------------------------------------------------ rollouts

    def _route(self, request: web.Request) -> RouteConfig:
        name = request.match_info["route"]
        rc = self.gw.loaded.config.route(name)
        if rc is None:
            raise ApiError(404, "unknown_route", f"no route named {name!r}")
        return rc

    async def _route_write(self, request: web.Request, action: str, fields: frozenset[str],
                           change: Callable[[StateDoc, RouteConfig, Principal, str, dict[str, Any]],
                                            Change]) -> web.Response:
        principal = await self._principal(request, "killgate:rollout")
        rc = self._route(request)
        body = await self._body(request, fields | {"reason"})
        reason = self._reason(body)
        wait = self._wait(request)
        rid, peer = self._meta(request)
        gate = await self.gw.shadow.gate_for(rc)  # a change that gives a shadow traffic

        def apply(cur: StateDoc) -> Change:
            ch = change(cur, rc, principal, reason, body)
            if gate is not None and (why := gate(cur, ch)) is not None:
                raise ApiError(409, "shadow_agreement", why)
            return ch

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            before, after = cur.overrides.get(rc.name), new.overrides.get(rc.name)
            return AuditDraft(principal.subject, action, {"route": rc.name}, reason,
                              _override_json(before, effective_stable(cur, rc)),
                              _override_json(after, effective_stable(new, rc)), rid, peer)

        return await self._write(request, principal, apply, describe, wait,
                                 {"route": rc.name, "action": action})

    async def rollback(self, request: web.Request) -> web.Response:
        def change(cur: StateDoc, rc: RouteConfig, p: Principal, reason: str,
                   body: dict[str, Any]) -> Change:
            to = body.get("to")
            if to is not None and not isinstance(to, str):
                raise ApiError(400, "bad_request", "'to' must be a version name")
            return overrides.rollback(cur, rc, to, p.subject, reason, utc_now())

        return await self._route_write(request, "rollback", frozenset({"to"}), change)

    async def promote(self, request: web.Request) -> web.Response:
        def change(cur: StateDoc, rc: RouteConfig, p: Principal, reason: str,
                   body: dict[str, Any]) -> Change:
            version = body.get("version")
            if not isinstance(version, str) or not version:
                raise ApiError(400, "bad_request", "'version' is required")
            return overrides.promote(cur, rc, version, p.subject, reason, utc_now())

        return await self._route_write(request, "promote", frozenset({"version"}), change)

    async def weights(self, request: web.Request) -> web.Response:
        def change(cur: StateDoc, rc: RouteConfig, p: Principal, reason: str,
                   body: dict[str, Any]) -> Change:
            return overrides.set_weights(cur, rc, body.get("weights"), p.subject, reason,
                                         utc_now())

        return await self._route_write(request, "weights", frozenset({"weights"}), change)

    async def release(self, request: web.Request) -> web.Response:
        def change(cur: StateDoc, rc: RouteConfig, p: Principal, reason: str,
                   body: dict[str, Any]) -> Change:
            return overrides.release(cur, rc, p.subject, reason, utc_now())

        return await self._route_write(request, "release", frozenset(), change)

    async def _write(self, request: web.Request, principal: Principal, change: Any,
                     describe: Any, wait: float, extra: dict[str, Any]) -> web.Response:
        """Apply a change with its audit event; answer with the propagation receipt.

        With an Idempotency-Key, a retried request (same caller, same key, same body)
        gets the first answer back and causes no second action or audit event.
        """
        sync = self.gw.sync
        assert sync is not None
        ident, fingerprint = await self._idempotency(request, principal)
        if ident is not None:
            earlier = await sync.store.idem_claim(
                ident, {"fingerprint": fingerprint}, IDEMPOTENCY_TTL)
            if earlier is not None:
                resp = await self._replay(ident, earlier, fingerprint, wait)
                await self._audit_replay(request, principal, resp)
                return resp
        trace_id = request.get(TRACE_ID, "")

        def traced(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return dataclasses.replace(describe(cur, new), trace_id=trace_id)

        try:
            new, ev = await sync.write(change, traced)
        except BaseException:
            if ident is not None:
                with contextlib.suppress(StateError):
                    await sync.store.idem_release(ident)
            raise
        # what the answer says beside its receipt; `changed` false: it was already so
        extra = {**extra, "changed": ev is not None}
        if ev is not None:
            extra["audit_id"] = ev["id"]
        if ident is not None:
            # record the generation first: a concurrent retry can then answer with it
            with contextlib.suppress(StateError):
                await sync.store.idem_set(ident, {"fingerprint": fingerprint,
                                                  "generation": new.generation,
                                                  "extra": extra}, IDEMPOTENCY_TTL)
        receipt = await sync.receipt(new.generation, wait)
        receipt.update(extra)
        if ev is not None:
            event(log, "admin_write", actor=ev["actor"], action=ev["action"], target=ev["target"],
                  generation=new.generation, acked=receipt["applied"]["acked"],
                  instances=receipt["applied"]["instances"])
        if ident is not None:
            with contextlib.suppress(StateError):
                await sync.store.idem_set(ident, {"fingerprint": fingerprint,
                                                  "generation": new.generation,
                                                  "response": receipt}, IDEMPOTENCY_TTL)
        return web.json_response(receipt)

    async def _audit_replay(self, request: web.Request, principal: Principal,
                            resp: web.Response) -> None:
        """One replay record per answered retry (RELIABILITY row 47): the action itself
        was recorded once. Best effort: the replay changed nothing, so a store that cannot
        take the record does not turn the answer into an error."""
        first = json.loads(resp.text or "{}")
        rid, peer = self._meta(request)
        draft = AuditDraft(principal.subject, "replay",
                           {"method": request.method, "path": request.path,
                            "generation": first.get("generation"),
                            "audit_id": first.get("audit_id")},
                           "a retry with the same Idempotency-Key: answered with the first "
                           "result, nothing applied again", request_id=rid, source=peer,
                           trace_id=request.get(TRACE_ID, ""))
        try:
            await self._append_audit(draft)
        except (StateError, AuditError) as exc:
            event(log, "replay_audit_failed", logging.WARNING, error=str(exc))

    async def _idempotency(self, request: web.Request,
                           principal: Principal) -> tuple[str | None, str]:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None, ""
        if not 1 <= len(key) <= 128 or not key.isprintable() or not key.isascii():
            raise ApiError(400, "bad_request",
                           "Idempotency-Key must be 1-128 printable ASCII characters")
        body = await request.read()
        fingerprint = hashlib.sha256(
            request.method.encode() + b" " + request.path.encode() + b"\n" + body).hexdigest()
        ident = hashlib.sha256(f"{principal.subject}\n{key}".encode()).hexdigest()
        return ident, fingerprint

    async def _replay(self, ident: str, earlier: dict[str, Any], fingerprint: str,
                      wait: float) -> web.Response:
        sync = self.gw.sync
        assert sync is not None
        if earlier.get("fingerprint") != fingerprint:
            raise ApiError(409, "idempotency_key_reused",
                           "this Idempotency-Key was used for a different request")
        deadline = time.monotonic() + wait + 5.0
        while "response" not in earlier and "generation" not in earlier:
            if time.monotonic() > deadline:
                raise ApiError(409, "in_progress",
                               "a request with this Idempotency-Key is still being applied")
            await asyncio.sleep(0.01)
            got = await sync.store.idem_claim(ident, {"fingerprint": fingerprint},
                                              IDEMPOTENCY_TTL)
            if got is None:  # the first attempt failed and released the key
                await sync.store.idem_release(ident)
                raise ApiError(409, "in_progress", "the first request with this "
                               "Idempotency-Key failed; retry with a new key")
            earlier = got
        if "response" in earlier:
            resp = dict(earlier["response"])
        else:
            resp = await sync.receipt(int(earlier["generation"]), wait)
            resp.update(earlier.get("extra", {}))
        return web.json_response(resp, headers={"idempotent-replayed": "true"})
