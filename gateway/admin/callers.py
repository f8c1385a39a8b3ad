"""Who calls the admin API: the token check, its budgets, what a refused call leaves behind.

Owns `Callers`: the client's address (behind trusted proxies), the token checked cache
first and budgeted per address and, for addresses whose last check failed
(admin/standing.py), for all together (a flood never blocks a known token, nor a new one
from an address that sends no junk), scopes, and a refused
call's counter, log line (rate-limited: a refusal costs a caller nothing) and audit
tally. Every admin handler asks it; ports only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from typing import Any

from aiohttp import web

from gateway import tokenbucket
from gateway.admin import inputs
from gateway.admin.auth import Authenticator, Principal
from gateway.admin.denied import DeniedLog
from gateway.admin.limiter import TokenBucket
from gateway.admin.ports import Counters, Current
from gateway.admin.scopedkeys import ScopeBeyondKey
from gateway.admin.standing import FREE, SHARED, Standing
from gateway.configfile import LoadedConfig
from gateway.domain.audit import clean_text, uuid4_hex
from gateway.errors import ApiError, Unauthenticated
from gateway.forwarded import trusted_proxies
from gateway.log import event

# the principal a request was prepared by (the console sends it with its writes): any other
# signed in is refused, 409 principal_changed
EXPECT_SUBJECT = "X-Killgate-Subject"

__all__ = ["Callers"]

log = logging.getLogger("killgate.admin")
#: a request's client address, as `Callers.peer` found it
_PEER = web.RequestKey("killgate.peer", str)

#: (status, error type; None: any) of a refused call -> its audit action
REFUSALS: dict[tuple[int, str | None], str] = {
    (401, None): "authn_fail", (403, None): "authz_fail", (429, None): "auth_rate_limited",
    # signed in as another principal than the one that prepared the request
    (409, "principal_changed"): "principal_changed"}

LOG_RATE = 1.0  # admin_denied lines a second, after a burst of
LOG_BURST = 20


def _endpoint(request: web.Request) -> str:
    """The route pattern a request matched (`/v1/routes/{route}/rollback`): what callers
    chose, never their text."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else clean_text(request.path, 256)


def budget_key(peer: str) -> tuple[str, str]:
    """(whose token-check budget an address spends, its network): its own and itself, or
    for IPv6 its /64's (a client holds at least a /64: one budget per address would give it
    2^64) and its /48 (a site's: admin/standing.py bounds the failing /64s of one)."""
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return peer, peer
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return (str(ipaddress.IPv6Network((addr, 64), strict=False)),
                str(ipaddress.IPv6Network((addr, 48), strict=False)))
    return peer, peer


def _limiters(loaded: LoadedConfig) -> tuple[TokenBucket, TokenBucket, TokenBucket]:
    """Token checks per client address; (ten times that) for the addresses whose checks
    failed, all together: a spray from many addresses is bounded too; and (one address's)
    the reserve of those never seen failing once that table is full (admin/standing.py)."""
    a = loaded.config.admin
    return (TokenBucket(a.auth_check_rate, a.auth_check_burst),
            TokenBucket(10 * a.auth_check_rate, 10 * a.auth_check_burst),
            TokenBucket(a.auth_check_rate, a.auth_check_burst))


#: scopes whose holders put their own text into the trail anyway (a write's `reason`)
WRITE_SCOPES = ("killgate:kill", "killgate:rollout")


def claimed(expected: str, principal: Principal) -> str:
    """What the trail records of a principal_changed refusal's X-Killgate-Subject: its
    length and SHA-256 (a guess, `printf %s alice | sha256sum`, can be checked against
    it), and its text (cleaned, bounded) only for a caller that may write, whose writes'
    reasons put its own text there anyway. The header's text went into the trail for
    any token: a read-only one (that may write nothing) put 200 characters of its
    choosing into each of its events (found at stop 37). Pure."""
    raw = expected.encode("utf-8", "surrogateescape")
    said = (f"{clean_text(expected, 64)!r}, "
            if any(principal.may(s) for s in WRITE_SCOPES) else "")
    return (f"prepared for another principal (X-Killgate-Subject {said}{len(expected)} "
            f"characters, sha256:{hashlib.sha256(raw).hexdigest()}) than the one signed "
            f"in, {principal.subject!r}: nothing was done")


class Callers:
    def __init__(self, current: Current, counters: Counters, denied: DeniedLog) -> None:
        self.current = current
        self.counters = counters
        self.denied = denied
        loaded = current.loaded
        self.auth = Authenticator(loaded.config.admin.auth, loaded.resolve)
        self.limiter, self.all_checks, self.reserve = _limiters(loaded)
        self.standing = Standing()
        self._log_budget = tokenbucket.TokenBucket(LOG_RATE, LOG_BURST)
        self._unlogged = 0  # refusals not logged since the last admin_denied line
        self._log_problems()

    def _log_problems(self) -> None:
        """The auth settings' problems, at start and at each change: the main key's (every
        call answers 503) and each scoped key's (its tokens answer 503). The main key's is
        also a gauge: /readyz is 200 and the data plane serves, so only a log line said
        that no one, Alertmanager included, could kill or roll back through this instance."""
        self.counters.set("killgate_admin_auth_broken", 1.0 if self.auth.problem else 0.0)
        if self.auth.problem:
            event(log, "admin_auth_not_configured", logging.ERROR, problem=self.auth.problem)
        for key in self.auth.scoped.values():
            if key.problem:
                event(log, "admin_auth_not_configured", logging.ERROR, key_name=key.name,
                      problem=key.problem)

    def reconfigure(self, loaded: LoadedConfig, checked: Authenticator | None = None) -> None:
        """A reloaded config may change the admin auth settings (not the listener), or the
        key in the file they name. `checked`: the authenticator the reload was validated
        with (its key already read), put in force whenever given."""
        a = loaded.config.admin
        if (a.auth_check_rate, a.auth_check_burst) != (self.limiter.rate, self.limiter.burst):
            self.limiter, self.all_checks, self.reserve = _limiters(loaded)
        auth = loaded.config.admin.auth
        was = self.auth
        if checked is not None and checked.cfg == auth and checked is not was:
            self.auth = checked  # (also with the settings unchanged: a key rotated in its file)
        elif auth != was.cfg:
            self.auth = Authenticator(auth, loaded.resolve)
        else:
            return
        self._log_problems()
        if not self.auth.problem and self.auth.key_digest != was.key_digest:
            event(log, "admin_auth_key_reloaded", logging.WARNING,
                  detail="tokens signed with the previous key are refused from now on")

    def peer(self, request: web.Request) -> str:
        """The client's address: the socket peer, or behind `admin.trusted_proxies` the
        right-most untrusted X-Forwarded-For hop. Found once a request (`authorize`, then
        `meta` for its audit event: the same request, the same answer)."""
        found = request.get(_PEER)
        if found is None:
            trusted = trusted_proxies(tuple(self.current.loaded.config.admin.trusted_proxies))
            found = request[_PEER] = trusted.client(
                request.remote, request.headers.getall("X-Forwarded-For", ()))
        return found

    def meta(self, request: web.Request) -> tuple[str, str]:
        """(request id, peer) for the audit event and the answer."""
        # (drawn only when the caller names none: the default is not made for nothing)
        return inputs.request_id(request, "") or uuid4_hex(), self.peer(request)

    async def authorize(self, request: web.Request, scope: str | None) -> Principal:
        """Who calls, in the order that keeps a valid token usable under a flood: the
        header's size was capped by the listener (431), a token verified before is taken
        from the cache at once, and only an unknown token spends a token check of its
        address's budget (429 when it is spent) before its signature is checked.
        `scope` None: any valid token."""
        peer = self.peer(request)
        principal: Principal | None = None
        try:
            headers = request.headers.getall("Authorization", [])
            if len(headers) > 1:
                raise Unauthenticated()
            header = headers[0] if headers else None
            principal = await self.auth.cached(header) or await self._check(peer, header)
            if scope is not None:
                principal.require(scope)
        except ApiError as exc:
            self.refused(request, peer, scope, principal, exc)
            raise
        # a request prepared by one principal (the console's dialog) and signed in as
        # another (a proxy's session that changed meanwhile) is refused, never applied
        expected = request.headers.get(EXPECT_SUBJECT)
        if expected is not None and expected != principal.subject:
            # (logged: a session that changed principal under an open dialog is worth finding;
            # within the refusals' line budget, the header's text cleaned and bounded)
            # counted and audited (through the tally) as the other refusals are: a caller
            # probing subjects shows in the trail and the metric, not only the log
            shown = clean_text(expected)[:200]
            changed = ApiError(409, "principal_changed", (
                f"this request was prepared by {shown!r}, but it is signed in as "
                f"{principal.subject!r} (the proxy's session changed?): nothing was done; "
                "send it again as yourself"))
            self.refused(request, peer, scope, principal, changed, expected=shown,
                         audited=f"{changed.type}: {claimed(expected, principal)}")
            raise changed
        return principal

    async def _check(self, peer: str, header: str | None) -> Principal:
        """Verify a token not seen before, within the budgets (429 when one is spent: no
        token work for a flood). The address's own budget first: one refused by it must
        not use up everyone's. Then the all-addresses one, spent only by an address whose
        last check failed (admin/standing.py): a flood of junk tokens spread over many
        addresses spends it, and a new valid token from another address is still checked
        (a check that skipped it and failed is charged to it after); addresses never seen
        failing once the table of failures is full, and one mistyped token of an address
        that passed before, spend a reserve of one address's budget instead."""
        key, group = budget_key(peer)
        wait = self.limiter.take(key)
        how = self.standing.how(key, group) if wait == 0 else SHARED
        if wait == 0 and how != FREE:
            wait = (self.all_checks if how == SHARED else self.reserve).take("*")
        if wait > 0:
            raise self.limiter.refusal(wait)
        try:
            principal = await self.auth.verify(header)
        except Unauthenticated as exc:
            if exc.type == "expired":  # (its signature was good: a genuine, old token)
                self.standing.passed(key)
            else:
                self.standing.failed(key, group)
                if how != SHARED:
                    self.all_checks.take("*")
            raise
        except ScopeBeyondKey:  # (its signature was good: a holder of a scoped key)
            self.standing.passed(key)
            raise
        except BaseException:
            # no verdict on the token (its scoped key not configured: 503; a bug): the
            # mark a FREE check made goes, and a failure from before stays
            if how == FREE:
                self.standing.unmark(key)
            raise
        self.standing.passed(key)
        return principal

    def _log_denied(self, **fields: Any) -> None:
        """One `admin_denied` line, within LOG_RATE lines a second (bursts of LOG_BURST)
        for the process: a refusal without a token costs nothing, so without a budget
        anyone could write a line per request. The next line written says how many were
        not (`unlogged`); the metric and the audit tally count every one."""
        if self._log_budget.take("*") > 0:
            self._unlogged += 1
            return
        if self._unlogged:
            fields["unlogged"], self._unlogged = self._unlogged, 0
        event(log, "admin_denied", logging.WARNING, **fields)

    def refused(self, request: web.Request, peer: str, scope: str | None,
                principal: Principal | None, exc: ApiError, audited: str | None = None,
                **logged: Any) -> None:
        """Count, log and (through the audit trail's tally) audit a refused call.
        `audited`: the tally's reason (default: the error's type and message); `logged`:
        more fields for its log line."""
        action = REFUSALS.get((exc.status, exc.type)) or REFUSALS.get((exc.status, None))
        if action is None:  # a 503: the auth settings cannot verify anything (logged apart)
            return
        self.counters.inc("killgate_auth_failures_total", (str(exc.status),),
                          label_names=("code",))
        # (a token refused for claiming beyond its scoped key: its subject, key named)
        subject = principal.subject if principal is not None else getattr(exc, "subject", None)
        endpoint = _endpoint(request)
        if exc.status != 429:  # (429s come in floods: the tally stands for them)
            self._log_denied(status=exc.status, type=exc.type, peer=peer, path=endpoint,
                             scope=scope, subject=subject, **logged)
        self.denied.record(action, subject, peer, request.method, endpoint,
                           audited or f"{exc.type}: {exc.message}", scope or "(any)")
