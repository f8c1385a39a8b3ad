"""An approval request as the state document stores it, and as the API shows it.

The record of a gated write (CONTRACT §5.2): its intent whole, the SHA-256 of the change it
will make, who must approve and who did, and when it expires; read back strictly (a record
of any other shape is never shown nor applied; `open_request`: one read back to approve,
and what refuses it). Its life (request, approve, decline) is approvals.py's, its expiry
approvalexpiry.py's.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway import __version__
from gateway.admin import actions
from gateway.admin.actions import Intent
from gateway.admin.scopedkeys import SCOPED_ACTOR
from gateway.domain.audit import clean_text
from gateway.domain.statedoc import StateDoc
from gateway.errors import DomainError

__all__ = ["FORMAT", "WRITTEN_BY", "Approval", "ApprovalRefused", "UnknownAction", "all_open",
           "iso", "newer_refusal", "newer_scope_note", "open_request", "principal_key"]


class ApprovalRefused(DomainError):
    """A refusal decided on the state document (so a stale copy is checked again against
    the store before it stands), with the HTTP status it means."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(type_, message)
        self.status = status


class UnknownAction(ValueError):
    """A well-formed record this version does not know all of: an action, a field, or a
    format past FORMAT, written by a newer version (a rolling upgrade, or one rolled
    back). Never applied here (what it would change is not all known here), and never
    dropped as invalid by this version's sweep: the version that wrote it decides it.
    `written_by`: the version the record names (records name it from this version on),
    cleaned and bounded; None when it names none."""

    def __init__(self, message: str, written_by: str | None = None,
                 action: str = "") -> None:
        super().__init__(message)
        self.written_by = written_by
        self.action = action

    @property
    def scope(self) -> str:
        """The scope deciding it takes here: its action's when known, else the one that
        implies every scope."""
        return actions.SCOPE_OF.get(self.action, "killgate:admin")

    @property
    def newer(self) -> str:
        """The version that wrote it, as a sentence says it."""
        return self.written_by or "a newer version of killgate"


#: the record's format: a newer version's record names a higher one (or fields, or an
#: action, this version does not know), and is never applied here
FORMAT = 1
WRITTEN_BY = f"killgate {__version__}"
_FIELDS = frozenset({"id", "gate", "hash", "needs", "approved_by", "created", "expires",
                     "intent", "format", "written_by"})
_INTENT_FIELDS = frozenset({"action", "target", "args", "reason", "actor", "request_id",
                            "source"})
_SELECTORS = frozenset({"scope", "route", "version"})


def _unknown_parts(d: dict[str, Any], action: str) -> list[str]:
    """What of a record this version does not know (its format, fields, its change's
    target or arguments): never applied as if it were not there. Pure."""
    out = []
    fmt = d.get("format", FORMAT)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > FORMAT:
        out.append(f"format {clean_text(str(fmt), 16)}")
    i = d["intent"]
    target = set(i["target"]) - (_SELECTORS if action in ("kill", "unkill") else {"route"})
    for where, extra in (("field", set(d) - _FIELDS), ("intent field", set(i) - _INTENT_FIELDS),
                         ("target", target),
                         ("argument", set(i["args"]) - actions.ACTIONS[action])):
        out += [f"{where} {clean_text(str(name), 32)!r}" for name in sorted(map(str, extra))]
    return out


def newer_refusal(approval_id: str, exc: UnknownAction) -> ApprovalRefused:
    """An approval of a newer version's record, refused: by whom it can be decided (it
    answered 409 approval_invalid, "not a valid record": an approver during a rolling
    upgrade went looking for corruption)."""
    return ApprovalRefused(409, "approval_from_newer_version", (
        f"approval {approval_id} was requested on {exc.newer}, and this instance runs "
        f"{WRITTEN_BY}, which does not know all it would change ({exc}): approve it "
        f"through an instance of that version (or newer), or decline it here (that takes "
        f"{exc.scope})"))


def newer_scope_note(approval_id: str, exc: UnknownAction) -> str:
    """Why a decline of a newer version's record takes killgate:admin here (a 403's
    message goes on with it)."""
    return (f": approval {approval_id} was requested on {exc.newer}, and this instance "
            f"({WRITTEN_BY}) does not know the scope its action needs; decline it here with "
            "killgate:admin, or through an instance of that version with the action's scope")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


#: Unicode's default-ignorable code points (DerivedCoreProperties): shown as nothing, yet
#: not all format characters (Cf): a combining grapheme joiner, variation selectors, the
#: Hangul fillers NFKC leaves as they are
_IGNORABLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
                        "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f"
                        "\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
                        "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")


def principal_key(subject: str) -> str:
    """The subject as the two-person rule compares it: NFKC, case-folded, without control
    characters, invisible ones (format and other default-ignorable code points) and
    surrounding spaces. `Alice`, `alice `, fullwidth `alice`, `ali\u200bce` and
    `ali\u034fce` are one principal here (a second token of the same person under a
    variant of its name must not count as a second person); two people whose subjects
    differ only so are taken for one, which asks for a third approver, never fewer.
    A scoped key's actor (`key:<name>/<sub>`, admin/scopedkeys.py) is its key alone: its
    holder (a job) can mint any `sub`, so `key:bot/a` and `key:bot/b` are one secret and
    one principal (else one job's secret requested and approved an unkill by itself)."""
    s = _IGNORABLE.sub("", unicodedata.normalize("NFKC", subject))
    s = "".join(c for c in s if unicodedata.category(c) not in ("Cc", "Cf"))
    s = s.strip().casefold()
    if s.startswith(SCOPED_ACTOR):
        return s.partition("/")[0]
    return s


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    gate: str  # the approvals: key (unkill_global, promote, ...)
    intent: Intent
    hash: str
    needs: int
    approved_by: tuple[str, ...]
    created: float  # unix seconds
    expires: float

    @property
    def requested_by(self) -> str:
        return self.intent.actor

    def to_json(self) -> dict[str, Any]:
        i = self.intent
        return {"id": self.id, "gate": self.gate, "hash": self.hash, "needs": self.needs,
                "approved_by": list(self.approved_by), "created": self.created,
                "expires": self.expires, "format": FORMAT, "written_by": WRITTEN_BY,
                "intent": {"action": i.action, "target": i.target, "args": i.args,
                           "reason": i.reason, "actor": i.actor, "request_id": i.request_id,
                           "source": i.source}}

    @classmethod
    def from_json(cls, d: Any) -> Approval:
        """The record as stored; ValueError when it is not one (shape or types), and
        UnknownAction when a newer version wrote what this one does not know (`read`)."""
        rec, newer = cls.read(d)
        if newer is not None:
            raise newer
        return rec

    @classmethod
    def read(cls, d: Any) -> tuple[Approval, UnknownAction | None]:
        """The record as stored, and what of it this version does not know (None: all of
        it is known; else never applied here, but shown and counted: `all_open`);
        ValueError when it is not one (shape or types)."""
        try:
            i = d["intent"]
            if not (isinstance(d, dict) and isinstance(i, dict)
                    and isinstance(i["target"], dict) and isinstance(i["args"], dict)):
                raise TypeError("not JSON objects")
            intent = Intent(str(i["action"]), dict(i["target"]), dict(i["args"]),
                            str(i["reason"]), str(i["actor"]), str(i.get("request_id", "")),
                            str(i.get("source", "")))
            approved = tuple(str(a) for a in d["approved_by"])
            rec = cls(str(d["id"]), str(d["gate"]), intent, str(d["hash"]), int(d["needs"]),
                      approved, float(d["created"]), float(d["expires"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an approval record ({exc})") from None
        raw_by = d.get("written_by")
        by = clean_text(raw_by, 64) if isinstance(raw_by, str) and raw_by else None
        if intent.action not in actions.ACTIONS:
            return rec, UnknownAction(f"an approval of an action this version does not know "
                                      f"({clean_text(intent.action, 64)!r}: written by "
                                      f"{by or 'a newer version?'})", by)  # (no scope known)
        unknown = _unknown_parts(d, intent.action)
        if unknown:
            return rec, UnknownAction(f"an approval of a {intent.action} with what this "
                                      f"version does not know ({', '.join(unknown[:4])}: "
                                      f"written by {by or 'a newer version?'})", by,
                                      intent.action)
        return rec, None

    def public(self, newer: UnknownAction | None = None) -> dict[str, Any]:
        """What the API shows (CONTRACT §5.2's shape, and what is to be changed); of a
        newer version's record (`newer`), also `from_newer_version`: which version wrote
        it, what this one does not know, and that it is decided through that version."""
        i = self.intent
        if newer is not None:
            return {**self.public(), "from_newer_version": {
                "written_by": newer.written_by, "unknown": str(newer),
                "decide": "approve it through an instance of that version (or newer), or "
                          f"decline it (here that takes {newer.scope})",
                # (the scope a decline takes here, for a client to offer it or say why not:
                # the console offered Decline… to tokens the API then refused 403)
                "decline_scope": newer.scope}}
        return {"id": self.id, "action": i.action, "gate": self.gate, "target": i.target,
                "args": i.args, "reason": i.reason, "requested_by": i.actor,
                "needs": self.needs, "approved_by": list(self.approved_by),
                "created": iso(self.created), "expires": iso(self.expires),
                "hash": self.hash}


def all_open(doc: StateDoc) -> dict[str, tuple[Approval, UnknownAction | None]]:
    """Every record of `doc` that is one, with what a newer version wrote in it that this
    one does not know (None: nothing): such a request is open too, listed (GET
    /v1/approvals) and counted against the bounds on open requests, though never applied
    here. Left out, a newer instance's requests were invisible to an older one's
    approvers, and an older one let the fleet hold MAX_OPEN more of its own."""
    out = {}
    for key, raw in doc.approvals.items():
        try:
            out[key] = Approval.read(raw)
        except ValueError:
            continue  # shown nowhere and never applied; the sweeper drops it
    return out


def open_request(cur: StateDoc, approval_id: str, now: float,
                 require: Callable[[str], None]) -> Approval:
    """The open request `approval_id` of `cur`, to approve: refused (ApprovalRefused) when
    there is none, it is a newer version's (once the caller holds its action's scope:
    `require`, the caller's Principal.require), not a valid record, expired, or its change
    no longer matches the hash it was requested with."""
    raw = cur.approvals.get(approval_id)
    if raw is None:
        raise ApprovalRefused(404, "unknown_approval", f"no open approval {approval_id!r}")
    try:
        rec = Approval.from_json(raw)
    except UnknownAction as exc:
        if exc.action:
            # (its action's scope first, as for any record: a caller without it was
            # told to approve it through a newer instance, unaudited)
            require(exc.scope)
        raise newer_refusal(approval_id, exc) from None
    except ValueError:
        raise ApprovalRefused(409, "approval_invalid",
                              "the stored approval request is not a valid record") from None
    if rec.expires <= now:
        raise ApprovalRefused(409, "approval_expired",
                              f"approval {approval_id} expired at {iso(rec.expires)}")
    if rec.intent.change_hash() != rec.hash:
        raise ApprovalRefused(409, "approval_tampered",
                              "the stored change does not match the hash it was requested "
                              "with; it is not applied (decline it and request it again)")
    return rec
