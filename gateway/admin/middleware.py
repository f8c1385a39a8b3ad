"""The one place admin errors become HTTP answers (CONTRACT §4 error bodies).

Owns the mapping of the exception tree (gateway/errors.py) to status codes and the JSON
body `{"error": {"type", "message"}}`: ApiError keeps its status, a domain refusal gets
404/400/409 by its kind, store and audit
failures are 503 (nothing changed) or 409, aiohttp's own HTTP errors keep theirs. An
unexpected exception is logged with its traceback and answered with a bare 500 that
says nothing about it. Also the headers every answer carries unless it sets its own.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gateway.errors import (
    ApiError,
    AuditError,
    BadCursor,
    ConflictingState,
    DomainError,
    InvalidChange,
    NotDurable,
    StateError,
    StoreBusy,
    StoreFromNewerVersion,
    StoreOutcomeUnknown,
    StoreUnavailable,
    StoreUnverifiable,
    UnknownDrill,
    UnknownVersion,
)
from gateway.log import event

__all__ = ["ANSWER_HEADERS", "answer_error", "answer_headers", "errors", "json_error"]

log = logging.getLogger("killgate.admin")

#: the domain's refusals as HTTP statuses (one that carries `status` says its own; else 409)
_DOMAIN_STATUS: dict[type[DomainError], int] = {UnknownVersion: 404, InvalidChange: 400,
                                                ConflictingState: 409, UnknownDrill: 404,
                                                BadCursor: 400}


#: on every answer that does not say otherwise (the console's files carry their own CSP):
#: JSON that echoes a caller's text is never sniffed into a page, run, or framed, and
#: another site's page cannot load an answer its operator's session signs (a proxy's), and
#: no cache keeps one (the kill state is the present's; the console takes the server's clock
#: from an answer's Date: a stored answer's would make every age read younger)
ANSWER_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                  "Cache-Control": "no-store",
                  "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
                  "Cross-Origin-Resource-Policy": "same-origin"}


async def answer_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An on_response_prepare hook: ANSWER_HEADERS, where the answer has none of its own."""
    for name, value in ANSWER_HEADERS.items():
        response.headers.setdefault(name, value)


def json_error(status: int, type_: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message}}, status=status)


def busy_answer(exc: StoreBusy) -> web.Response:
    """503 for a store that answers -LOADING or -BUSY (state/redisbusy.py), with its type
    and a Retry-After: not "cannot be reached", nor "the audit trail cannot be written"."""
    resp = json_error(503, exc.type, str(exc))
    resp.headers["Retry-After"] = str(exc.retry_after)
    return resp


#: a read the store refused changes nothing by its nature: "nothing was changed" on `killgate
#: audit` (or the console's audit panel) in an outage read as if something had been tried;
#: what the operator needs then is where to look instead
_READS = frozenset({"GET", "HEAD"})
_READ_FAILED = ("what this reads is kept there: ask again once it answers; meanwhile "
                "`killgate status` says what this instance enforces (its kills are kept in "
                "memory), and `killgate audit verify --mirror FILE` reads an audit mirror "
                "(state.audit_mirror) where one is kept")


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:  # noqa: BLE001 - each kind answered by `answer_error`
        return answer_error(request, exc)


def answer_error(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer to a handler's exception (the `errors` middleware's, and admin/front.py's
    for the admin listener: one function, so both answer alike); an HTTPException that is
    not an error (a redirect) is raised again."""
    try:
        raise exc
    except ApiError as exc:
        resp = json_error(exc.status, exc.type, exc.message)
        for name, value in exc.headers.items():
            resp.headers[name] = value
        return resp
    except DomainError as exc:
        status = getattr(exc, "status", None) or _DOMAIN_STATUS.get(type(exc), 409)
        return json_error(status, exc.type, exc.message)
    except AuditError as exc:
        event(log, "audit_write_failed", logging.ERROR, error=str(exc))
        return json_error(503, "audit_unavailable",
                          "the audit trail cannot be written, so the action was not applied")
    except StoreOutcomeUnknown as exc:
        if exc.key_kept:  # (admin/writes.py: the key names the write; Retry-After: ask again)
            resp = json_error(503, "outcome_unknown",
                              f"the state store took the change but did not confirm it "
                              f"({exc}): it may be in force. The same request sent again "
                              "with the same Idempotency-Key is answered with this write's "
                              "result if it landed, and runs it if it did not (the CLI does "
                              "so once)")
            resp.headers["Retry-After"] = "1"
            return resp
        return json_error(503, "outcome_unknown",
                          f"the state store took the change but did not confirm it ({exc}): it "
                          "may be in force; check `killgate status` (the kills, the "
                          "generation) and `killgate audit` before retrying. A retry runs the "
                          "change again: a kill already in force is left as it was, an unkill "
                          "already made answers 409 not_killed")
    except StoreBusy as exc:  # (-LOADING, -BUSY: it answers; a moment, or SCRIPT KILL)
        return busy_answer(exc)
    except StoreFromNewerVersion as exc:  # (a rolling upgrade: another instance writes it)
        return json_error(503, "state_from_newer_version", f"nothing was changed: {exc}")
    except StoreUnverifiable as exc:  # (it answers: no outage to look for)
        return json_error(503, "state_store_unavailable", (
            f"{exc}; {_READ_FAILED}" if request.method in _READS else
            f"nothing was changed: {exc}"))
    except StoreUnavailable as exc:
        return json_error(503, "state_store_unavailable", (
            f"the state store cannot be reached ({exc}); {_READ_FAILED}"
            if request.method in _READS else
            f"the state store cannot be reached, nothing was changed ({exc})"))
    except NotDurable as exc:
        resp = web.json_response({"error": {**exc.names, "type": "not_durable",
                                            "message": str(exc)}}, status=503)
        resp.headers["Retry-After"] = "1"
        return resp
    except StateError as exc:
        return json_error(409, "conflict", str(exc))
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "body_too_large", "the admin request body is too large")
    except web.RequestPayloadError:  # (a Content-Encoding the bytes do not follow)
        return json_error(400, "bad_request", "the body cannot be read: it is not what its "
                                              "Content-Encoding says")
    except web.HTTPException as exc:
        if exc.status >= 400:
            said = exc.reason if exc.status != 404 else (
                f"nothing at {request.path[:128]!r} here: the admin API's calls are under /v1/ "
                "(GET /openapi.json lists them), the operator console is at /ui/")
            resp = json_error(exc.status, exc.reason.lower().replace(" ", "_"), said)
            if "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        raise
    except Exception as exc:  # noqa: BLE001 - answered as a bare 500, logged in full
        event(log, "admin_internal_error", logging.ERROR, exc=exc, error=type(exc).__name__,
              path=request.path[:256], method=request.method)
        return json_error(500, "internal", "the admin API failed to handle this request")
