"""The admin client's HTTP: one call to the admin API, and a check of what came back.

Owns the rules that keep the operator's token and the operator's picture honest: a
redirect is never followed (it would carry the bearer token to wherever the Location
points, and a redirected write would look done); an answer must be a JSON object
(of the shape a command expects: `cli/shapes.py`), or the command fails naming what was wrong. Writes carry an
Idempotency-Key and are retried once on a connection error with the same key (and on a
503 `outcome_unknown` whose Retry-After says the key now names the write); a call
refused before its token was checked (429 `too_many_attempts`) is sent again after its
Retry-After, within --timeout. Standard
library only: the CLI works where the gateway's event loop is not running.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.cli.errors import ClientError
from gateway.cli.shapes import json_object
from gateway.cli.transport import Deadline, TooLarge, opener, proxy_of, read_capped
from gateway.cli.urls import admin_base, clean_token
from gateway.domain.audit import clean_text
from gateway.tokenhint import token_refused

__all__ = ["TIMEOUT", "Answer", "ClientError", "admin_base", "call", "clean_token"]

TIMEOUT = 35.0  # the API waits up to 30s for a receipt


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]


def call(base: str, token: str | None, method: str, path: str,
         body: dict[str, Any] | None = None, timeout: float = TIMEOUT,
         on_retry: Callable[[str], None] | None = None, patient: bool = True) -> Answer:
    """One call; a write whose connection failed or that got no answer within `timeout`
    is sent once more with the same Idempotency-Key (`on_retry` is told why first); a
    429 `too_many_attempts` is sent again after its Retry-After when `patient`. A write
    interrupted (Ctrl-C) fails with exit 130 saying it may have been applied."""
    try:
        return _call(base, token, method, path, body, timeout, on_retry, patient)
    except KeyboardInterrupt:
        if body is None:
            raise
        raise ClientError(f"interrupted (Ctrl-C) before the admin API answered; {MAY_HAVE}",
                          code=130) from None


def _call(base: str, token: str | None, method: str, path: str, body: dict[str, Any] | None,
          timeout: float, on_retry: Callable[[str], None] | None, patient: bool) -> Answer:
    base = admin_base(base)
    headers = {"accept": "application/json", "user-agent": "killgate-cli"}
    token = clean_token(token)
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
        headers["idempotency-key"] = uuid.uuid4().hex
    attempts = 2 if body is not None else 1
    attempt, waited = 0, 0.0
    landed = False  # a try of this write was sent and got no answer: it may have been applied
    while True:
        req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        deadline = Deadline(timeout)  # (the whole try: a dripped answer cannot hold it)
        try:
            with opener(base, deadline).open(req, timeout=timeout) as resp:
                if resp.headers.get("x-killgate-route") is not None:  # (a proxied answer)
                    raise ClientError(f"what answered at {base} routed the call to a backend: "
                                      f"{DATA_PLANE}")
                return Answer(resp.status, json_object(read_capped(resp, deadline), resp.status))
        except urllib.error.HTTPError as exc:
            try:
                raw = read_capped(exc.fp, deadline)
            except (http.client.HTTPException, OSError, TooLarge) as cut:
                if isinstance(cut, TimeoutError | TooLarge):
                    # (a 5xx to a write: a proxy's or the gateway's; it may have been applied)
                    may = f"; {MAY_HAVE}" if body is not None and exc.code >= 500 else ""
                    raise ClientError(f"the {exc.code} answer of the admin API at {base} "
                                      f"{_unread(cut, timeout)}{may}") from None
                raise ClientError(_broken(base, cut, body is not None, exc.code)) from None
            if 300 <= exc.code < 400:
                where = exc.headers.get("Location", "?")
                raise ClientError(
                    f"the admin API at {base} answered {exc.code} redirecting to {where!r}; "
                    "not followed (the token would go with it): give --admin the final "
                    "URL") from None
            kind = ""
            try:
                err = json.loads(raw)["error"]
                kind = str(err.get("type"))
                # (escaped: the message echoes text from the state, and is printed to a
                # terminal, where an escape sequence would move the cursor over it)
                msg = (f"{exc.code} {clean_text(str(err.get('type')), 64)}: "
                       f"{clean_text(str(err.get('message')), 2048)}")
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                # (not killgate's error shape: another server, an ingress' default page)
                got = clean_text(raw[:200].decode("utf-8", "replace"), 200).strip()
                msg = (f"{exc.code} from {base}, which is not a killgate error ("
                       f"{repr(got) if got else 'an empty body'}): is --admin (or "
                       "$KILLGATE_ADMIN_URL) killgate's admin listener?")
            if kind == "no_route" or exc.headers.get("x-killgate-route") is not None:
                msg += f" ({DATA_PLANE})"
            if exc.code == 401:  # (the API says no more, by design: say what it can be)
                msg += token_refused(kind, bool(token))
            wait = _retry_after(exc) if kind == "too_many_attempts" else None
            if wait is not None and patient and waited + wait <= timeout:
                # refused before the token was even checked (a flood of new tokens from
                # this address, or from everywhere): nothing was done; the operator's kill
                # must get through once the budget allows, not fail at the first try
                if on_retry is not None:
                    on_retry(f"{msg}: trying again in {wait:g}s (" + (
                        LANDED if landed else "nothing was done") + ")")
                time.sleep(wait)
                waited += wait
                continue
            if kind == "outcome_unknown" and body is not None and attempt + 1 < attempts \
                    and (wait := _retry_after(exc)) is not None and waited + wait <= timeout:
                # (the store took the write, its answer was lost, and the gateway kept the
                # key naming it: sent again with the key, it gets this write's result if it
                # landed, or runs it if it did not; Retry-After only then)
                landed, attempt = True, attempt + 1
                if on_retry is not None:
                    on_retry(f"{msg}: sending it once more in {wait:g}s (the same "
                             "Idempotency-Key: answered with the write's result if it landed)")
                time.sleep(wait)
                waited += wait
                continue
            if landed and kind == "in_progress" and waited + 0.5 <= timeout:
                # (the try that got no answer is still being applied, or failed and let its
                # key go: sent again with that key, it gets that try's answer or runs anew)
                if on_retry is not None and not waited:
                    on_retry(f"{msg}: asking again, within --timeout")
                time.sleep(0.5)
                waited += 0.5
                continue
            if body is not None and not kind and exc.code in (502, 503, 504):
                # (a proxy in front said the gateway did not answer it: as a try that got
                # no answer, the write may have been applied; sent once more, same key)
                landed, attempt = True, attempt + 1
                if attempt < attempts:
                    if on_retry is not None:
                        on_retry(f"{msg}: sending it once more (the same Idempotency-Key: "
                                 "it takes effect once)")
                    continue
                msg += f"; {MAY_HAVE}"
            if landed and kind == "too_many_attempts":
                # (refused before its token was checked: it says nothing of the try before,
                # which another worker, one that had seen the token, may have applied)
                msg += f"; {LANDED}: check with `killgate status` and `killgate audit`"
            raise ClientError(msg, status=exc.code, kind=kind or None) from None
        except TooLarge as exc:
            msg = (f"the answer of the admin API at {base} was {exc}: not read; is --admin "
                   "(or $KILLGATE_ADMIN_URL) killgate's admin listener?")
            if body is not None:
                msg += (f"; {MAY_HAVE}")
            raise ClientError(msg) from None
        except UnicodeError:  # (the host name's IDNA encoding: an empty or long label)
            raise ClientError(f"cannot reach the admin API at {base}: its host name is not "
                              "one (an empty label, or one longer than 63 characters)") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = TimeoutError() if deadline.fired else getattr(exc, "reason", exc)
            # (refused, no such host, a certificate refused: the request never left; else
            # it may have arrived)
            unsent = isinstance(reason, ConnectionRefusedError | socket.gaierror
                                | ssl.SSLCertVerificationError)
            attempt += 1
            again = attempt < attempts
            if isinstance(reason, TimeoutError):
                reason = f"no answer within {timeout:g}s (--timeout)"
            elif isinstance(reason, ssl.SSLError) and reason.reason == "WRONG_VERSION_NUMBER":
                # (the handshake met plain HTTP: nothing was sent, and again would not be)
                unsent, again = True, False
                reason = f"{reason.reason}: {NOT_TLS}"
            elif isinstance(reason, ssl.SSLCertVerificationError):  # (again would be too)
                again = False
                reason = (f"{reason}; if it is the admin listener's TLS proxy, give its CA "
                          "certificate as SSL_CERT_FILE=ca.pem")
            if (via := proxy_of(base)) is not None:  # (what failed may be the proxy)
                if str(reason).startswith("Tunnel connection failed"):  # (CONNECT refused:
                    unsent, again = True, False  # nothing left for the API; nor would again)
                    reason = f"the proxy {via} refused the tunnel ({str(reason)[26:]})"
                reason = f"{reason} (through the proxy {via}: $https_proxy or $http_proxy; " \
                         "$no_proxy takes a host off it)"
            landed = landed or (body is not None and not unsent)
            if again:
                if on_retry is not None:
                    on_retry(f"{reason}: sending it once more (the same Idempotency-Key: "
                             "it takes effect once)")
                continue
            msg = f"cannot reach the admin API at {base}: {reason}"
            if isinstance(reason, ConnectionRefusedError) and via is None:
                msg += (" (nothing listens there: is `killgate serve` running, with that "
                        "`admin.listen`? --admin or $KILLGATE_ADMIN_URL names another)")
            if body is not None and not unsent:
                msg += f"; {MAY_HAVE}"
            raise ClientError(msg) from None
        except http.client.HTTPException as exc:  # (after OSError: RemoteDisconnected is both)
            if deadline.fired:  # (a head cut by the deadline: no answer in time)
                msg = f"cannot reach the admin API at {base}: no answer within {timeout:g}s"
                raise ClientError(msg + (f"; {MAY_HAVE}" if body is not None else "")) from None
            raise ClientError(_broken(base, exc, body is not None)) from None
        finally:
            deadline.cancel()


#: said of a write whose answer was not had whole
MAY_HAVE = ("the write may have been applied all the same: check with `killgate status` and "
            "`killgate audit` before doing anything else")


def _unread(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"did not come whole within {timeout:g}s (--timeout)"
    return f"was {exc}: not read"


#: said of a write whose earlier try got no answer, when a later one is refused unchecked
LANDED = ("nothing was done by this try, but the one before got no answer and may have been "
          "applied")


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    """A 429's (or a 503 outcome_unknown's) Retry-After in seconds (1 to 30), or None."""
    value = (exc.headers.get("Retry-After") or "").strip()
    return float(value) if value.isdigit() and 1 <= int(value) <= 30 else None


# what to say when an https:// URL meets a listener that speaks plain HTTP
NOT_TLS = ("what answers there does not speak TLS: killgate's admin listener serves plain "
           "HTTP (TLS ends in front of it), so give an http:// URL, or the TLS proxy's")

# what to say when a data plane answered (its 404 `no_route`, or a routed answer)
DATA_PLANE = ("that is a killgate data plane, not its admin API: give --admin (or "
              "$KILLGATE_ADMIN_URL) the admin listener's URL, `admin.listen` in the config "
              "(the demo's: http://127.0.0.1:8081)")


def _broken(base: str, exc: Exception, write: bool, status: int | None = None) -> str:
    """What to say of an answer that is not HTTP, or was cut short."""
    if isinstance(exc, http.client.IncompleteRead | OSError):
        got = f" ({status})" if status is not None else ""
        msg = f"the answer of the admin API at {base}{got} was cut short"
        if write:
            msg += ("; the write may have been applied: check with `killgate status` and "
                    "`killgate audit`")
        return msg
    what = str(exc)[:80].encode("unicode_escape").decode("ascii")
    return (f"what answered at {base} is not HTTP ({type(exc).__name__}: {what}); is --admin "
            "the admin listener's URL?")
