"""Running one admin write: idempotency, the state change with its audit event, and the
propagation receipt the caller gets back.

Owns the Idempotency-Key contract: a retried request (same caller, same key, same body)
gets the first answer back and causes no second action or audit event, only one replay
record (RELIABILITY row 47); the same key with another body is a 409. A key is claimed
for CLAIM_LEASE, renewed while its write runs: the claim of a write whose instance died
before it answered lapses, and a retry with the key (the CLI's, to another instance) then
runs the write. A write whose commit's answer was lost (503 outcome_unknown) leaves its key
naming the write it tried: a retry asks the store whether it landed, and answers with its
result if it did (an unkill's retry answered 409 not_killed, the first having lifted it),
or runs it if it did not. One committed but not yet on `min_replicas` replicas (503
not_durable) keeps its answer, replayed once a replica holds it. A retry's answer is
admin/replay.py's. Works through the narrow ports of admin/ports.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.admin.attempts import attempts, landed_record, unconfirmed_record, unknown_record
from gateway.admin.idemkeys import audit_replay, ended, key_of, settle_later
from gateway.admin.ports import Idempotency, StateWriter
from gateway.admin.replay import Replays
from gateway.admin.writedone import IDEMPOTENCY_TTL, Done, Op, kept, until
from gateway.domain.audit import AuditDraft, uuid4_hex
from gateway.domain.writeids import RETRY_OF, write_generation
from gateway.errors import (
    EarlierLanded,
    NotDurable,
    StateError,
    StoreOutcomeUnknown,
)
from gateway.errors_cut import CutAfterCommit
from gateway.log import event

__all__ = ["IDEMPOTENCY_TTL", "Done", "Writer"]  # (the first two: admin/writedone.py)

log = logging.getLogger("killgate.admin")
#: a claim (a write with this key is running), renewed every third of it while it runs:
#: one left by an instance that died lapses this soon (it was kept for IDEMPOTENCY_TTL:
#: the CLI's retry of a kill got "still being applied" for a day, and no kill was made)
CLAIM_LEASE = 15.0


class Writer:
    def __init__(self, state: StateWriter, idem: Idempotency,
                 audit: Callable[[AuditDraft], Awaitable[None]]) -> None:
        self.state = state
        self.idem = idem
        self.audit = audit
        #: retries with a key an earlier request holds (admin/replay.py)
        self.replays = Replays(state, idem, CLAIM_LEASE)
        #: `unknown` records the store did not take yet (`_unknown`), tried again
        self.settling: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """End the `unknown` records still tried (at shutdown: the claims lapse)."""
        for task in list(self.settling):
            task.cancel()
        await asyncio.gather(*self.settling, return_exceptions=True)

    async def run(self, request: web.Request, subject: str, wait: float, op: Op,
                  request_id: str, source: str, trace_id: str = "",
                  may: Callable[[str], bool] | None = None) -> web.Response:
        """Run `op` once per Idempotency-Key and answer with its receipt; a replay of an
        answer that names a scope (Done.scope) only to a caller that `may` hold it."""
        ident, fingerprint = await key_of(request, subject)
        # (the claim names its holder: a renewal or release of a claim that lapsed and was
        # taken by a retry since leaves the retry's alone)
        # (none without a key: nothing claims, renews, settles or lets go of it then)
        claim = {} if ident is None else {"fingerprint": fingerprint, "holder": uuid4_hex()}
        stood_in: list[dict[str, Any]] = []  # (the record of a first attempt this retries)
        if ident is not None:
            earlier = await self.idem.idem_claim(ident, claim, CLAIM_LEASE)
            if earlier is not None:
                resp = await self.replays.replay(ident, earlier, claim, wait, may, stood_in)
                if resp is not None:
                    await audit_replay(self.audit, request, subject, resp, request_id,
                                       source, trace_id)
                    return resp
                # (the first try's claim lapsed or was let go: this one holds it, and runs)
        held = asyncio.Event()  # set: the write is over, the claim no longer renewed
        renew = (None if ident is None else asyncio.create_task(
            self._renew(ident, claim, held), name="idem-renew"))
        tried = attempts(stood_in[0]) if stood_in else []  # (the earlier attempts' writes)
        try:
            fence = RETRY_OF.set(frozenset(w for w, _ in tried))  # (for op's writes only)
            try:
                done = await op()
            finally:
                RETRY_OF.reset(fence)
        except EarlierLanded as exc:
            # an earlier attempt's commit landed after this retry asked whether it had:
            # nothing done again, answered with its result
            await ended(held, renew)
            if ident is None or not stood_in:  # (never: only a retry's write is fenced)
                raise
            record = landed_record(stood_in[0], write_generation(str(exc)))
            await self._settle(ident, {**record, "holder": claim["holder"]},
                               until(stood_in[0]))
            resp = await self.replays.answer(record, wait, may)
            await audit_replay(self.audit, request, subject, resp, request_id, source,
                               trace_id)
            return resp
        except StoreOutcomeUnknown as exc:
            await ended(held, renew)
            if ident is not None:
                await self._unknown(ident, fingerprint, claim, exc, tried, stood_in)
            raise
        except (NotDurable, CutAfterCommit) as exc:
            # (cut: the stop cancelled it as it waited for its replicas, committed and in
            # force; let go, its retry ran the change again: an unkill answered 409
            # not_killed, tests/test_stop_during_wait.py)
            await ended(held, renew)
            if ident is not None and isinstance(exc.done, Done):
                # committed, in force, not yet on a replica: the key keeps its answer, and a
                # retry is answered with it once a replica holds it (it was let go, and the
                # retry ran again: a final approve's answered 404 unknown_approval)
                done = exc.done
                await self._settle(ident, unconfirmed_record(
                    fingerprint, claim["holder"], done.generation, done.status, done.body,
                    done.scope), kept(done))
            elif ident is not None:
                await self._let_go(ident, claim, stood_in)
            raise
        except BaseException:
            await ended(held, renew)
            if ident is not None:
                await self._let_go(ident, claim, stood_in)
            raise
        await ended(held, renew)  # (before the answer's record: no renewal replaces it)
        keep = kept(done)
        scoped = {} if done.scope is None else {"scope": done.scope}
        if ident is not None:
            # record the generation first: a concurrent retry can then answer with it
            await self._settle(ident, {"fingerprint": fingerprint, "holder": claim["holder"],
                                       "generation": done.generation, "status": done.status,
                                       "extra": done.body, **scoped}, keep)
        answer = dict(done.body)
        if done.generation is not None:
            receipt = await self.state.receipt(done.generation, wait)
            answer = {**receipt, **done.body}
            ev = done.event
            if ev is not None:
                event(log, "admin_write", actor=ev["actor"], action=ev["action"],
                      target=ev["target"], generation=done.generation,
                      acked=receipt["applied"]["acked"],
                      instances=receipt["applied"]["instances"])
        if ident is not None:
            await self._settle(ident, {"fingerprint": fingerprint, "holder": claim["holder"],
                                       "generation": done.generation, "status": done.status,
                                       "response": answer, **scoped}, keep)
        return web.json_response(answer, status=done.status)

    async def _unknown(self, ident: str, fingerprint: str, claim: dict[str, Any],
                       exc: StoreOutcomeUnknown, tried: list[tuple[str, int]],
                       stood_in: list[dict[str, Any]]) -> None:
        """The commit may have landed: the key keeps the write's id (for a retry to ask
        the store) and the answer it had made, in place of the claim; let go, as for
        any failure (`_let_go`), when the write says nothing of what it would have made. A retry's
        key keeps the earlier attempts' write ids too (`tried`: any of them may land
        yet, the same partition holding their commits)."""
        done, doc = exc.done, exc.doc
        if not isinstance(done, Done) or doc is None or not doc.writes:
            await self._let_go(ident, claim, stood_in)
            return
        record = unknown_record(fingerprint, claim["holder"], doc.writes[-1], doc.generation,
                                tried, done.status, done.body, done.generation is not None,
                                scope=done.scope)
        if done.keep is not None:  # (its answer, should it have landed, kept as long)
            record["until"] = time.time() + kept(done)
        try:
            exc.key_kept = await self.idem.idem_settle(ident, record, kept(done))
        except StateError:  # (the store away: tried again while the claim can be ours)
            task = asyncio.get_running_loop().create_task(settle_later(
                self.idem, ident, record, kept(done), CLAIM_LEASE), name="idem-unknown")
            self.settling.add(task)
            task.add_done_callback(self.settling.discard)
            return
        if not exc.key_kept:
            event(log, "idempotency_claim_lost", logging.WARNING, lease=CLAIM_LEASE,
                  at="unknown")

    async def _let_go(self, ident: str, claim: dict[str, Any],
                      stood_in: list[dict[str, Any]]) -> None:
        """A failed write's key, let go; a retry's (after outcome_unknown) holds the
        record of the attempts it stood in for again: any may land yet, its commit in
        flight (let go, the next retry ran the write unfenced: a final approve answered
        404 unknown_approval for the change the first attempt had applied meanwhile)."""
        with contextlib.suppress(StateError):
            if stood_in:
                await self.idem.idem_take(ident, claim, stood_in[0], until(stood_in[0]))
            else:
                await self.idem.idem_release(ident, claim)

    async def _settle(self, ident: str, record: dict[str, Any], keep: float) -> bool:
        """Record the answer only while the claim is still ours (compare-and-set on its
        holder): one that lapsed and was taken by a retry keeps the retry's record (an
        unconditional write overwrote it, and a third try was answered with ours while
        the retry's write also ran). Best effort: a store away leaves the claim to lapse."""
        try:
            if await self.idem.idem_settle(ident, record, keep):
                return True
            event(log, "idempotency_claim_lost", logging.WARNING, lease=CLAIM_LEASE,
                  at="answer")
        except StateError:
            pass
        return False

    async def _renew(self, ident: str, claim: dict[str, Any], over: asyncio.Event) -> None:
        """Keep the claim while the write runs (best effort: a store that cannot take it
        lets it lapse, and a retry may then run the write too). Ends between renewals,
        never in one: a renewal cut off in its thread could land after the answer's
        record and replace it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(over.wait(), CLAIM_LEASE / 3)
                return
            try:
                if not await self.idem.idem_renew(ident, claim, CLAIM_LEASE):
                    # lapsed, and a retry may run the write too: said, never overwritten
                    event(log, "idempotency_claim_lost", logging.WARNING, lease=CLAIM_LEASE)
                    return
            except StateError:
                pass  # (the store away: tried again at the next renewal)
