"""Reading the snapshot file at startup (`SnapshotReader`, the base of snapshot.py's
`SnapshotFile`): verified, and what of a file not trusted is kept.

With a signing key the file is signed like a stored document (kind `snapshot`, bound to
the deployment: the redis prefix). A file whose signature cannot be verified (signed with
a key id we do not hold: the state key was changed or regenerated; or a MAC that does not
match: edited, or another deployment's) keeps only its kills — they can only stop traffic
— and the rest (overrides, weights, history, identities, its generation) is refused: a key
changed while the store lost its data must not lift every kill (RELIABILITY row 13), and a
forger able to write the file could as well delete it (what it gains: kills, a denial of
service). So too for a file in the format before signing (no signature line: a migration)
and for one that other users may write (gateway/filemodes.py). Each is said loudly (a log
line, `state_unverified`, and `kills_only` in /v1/status → store.snapshot); an unkill
through the API lifts such a kill as any other.

State that came from such a file stays of unverified origin after this instance re-seeded
the store with it and applied its own document: the file it writes then (signed with its own
key, which may not be the fleet's) says so, `unverified_origin` {why, the epochs it created}
in its signed body, until the sync verifies a document of an epoch it did not create
(reseed.py's `_seen_fleet`). Read back at a restart, the file's state is kept (it is this
instance's own), but the sync still never writes it over a document it cannot verify: the
next write after a restart otherwise re-seeded over the fleet's document at every restart
(tests/test_snapshot_unverified_origin.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway import filemodes
from gateway.domain.statedoc import NewerDocument, RouteOverride, StateDoc
from gateway.log import event
from gateway.state.files import read_regular
from gateway.state.signing import MAGIC, Cause, Keyring, Unverified, cause_of
from gateway.state.snapshotbody import (
    Foreign,
    decode_body,
    kills_only,
    named_prefix,
    newer_kills,
    newer_rollbacks,
    read_origin,
)
from gateway.state.store import MAX_DOC_BYTES, OnUnverified, ignore_unverified

__all__ = ["SnapshotReader"]

log = logging.getLogger("killgate.state")


class SnapshotReader:
    def __init__(self, path: Path | None, keys: Keyring,
                 on_unverified: OnUnverified = ignore_unverified) -> None:
        self.path = path
        #: the deployment the file belongs to: the redis prefix ("local": a local store),
        #: named inside its signed body as well as in its MAC
        self.deployment = keys.context.decode()
        self.keys = keys.bound("snapshot\x00" + self.deployment)
        self.on_unverified = on_unverified
        #: the file read at startup was signed with our key (else: absent, or a migration)
        self.signed = False
        #: the file read at startup was signed with our previous key: written again at
        #: start (a quiet step 2 kept it so, and step 3 took its kills only, as tampering)
        self.previous_key = False
        #: why the file read at startup was refused whole (None: it was not, or none read)
        self.refused: str | None = None
        #: why only the kills of the file read at startup were kept (None: all, or none)
        self.kills_only: str | None = None
        #: why the state of the file read at startup is not the fleet's, as far as this
        #: instance knows (its `unverified_origin`), and the epochs it had created
        self.unverified_origin: str | None = None
        self.own_epochs: tuple[str, ...] = ()

    def read(self) -> StateDoc | None:
        """The snapshot, verified; None when absent or refused (reported)."""
        if self.path is None:
            return None
        try:
            raw = read_regular(self.path, MAX_DOC_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            event(log, "snapshot_unreadable", logging.ERROR, path=str(self.path),
                  error=exc.strerror)
            return None
        try:
            if raw is None:
                raise ValueError("not a regular file (a FIFO, device, socket or folder is "
                                 "never read as a snapshot; the next write replaces it)")
            if len(raw) > MAX_DOC_BYTES:
                raise ValueError(f"over the {MAX_DOC_BYTES}-byte limit of a state document "
                                 "(not read)")
            if self.keys.enabled and not raw.startswith(MAGIC):
                return self._kills_only(decode_body(raw, untrusted=True),
                                        "written before state signing")
            try:
                body, which = self.keys.open(b"snapshot", raw)
            except Unverified as exc:
                # (the key changed, or the file was edited: its kills only, never the rest)
                self._foreign(raw.partition(b"\n")[2], raw)
                doc = decode_body(raw.partition(b"\n")[2], untrusted=True)
                return self._kills_only(doc, f"{exc} (the state key changed, or the file was "
                                             "written without it)", cause=exc.cause)
            self._foreign(body, None)
            try:
                doc = decode_body(body)
            except NewerDocument as exc:  # (a rollback: verified, no forgery)
                return self._newer(body, exc)
            self.unverified_origin, self.own_epochs = read_origin(body)
        except Foreign as exc:
            self.refused = str(exc)
            self.on_unverified("snapshot", f"{self.path}: {exc}", None, "other")
            event(log, "snapshot_refused", logging.ERROR, path=str(self.path), error=str(exc),
                  prefix=exc.prefix, ours=self.deployment,
                  action="nothing of it is enforced (its kills are another deployment's): "
                         "this instance starts as one without a snapshot; the next write "
                         "replaces the file")
            return None
        except ValueError as exc:
            self.refused = str(exc)
            self.on_unverified("snapshot", f"{self.path}: {exc}", None, cause_of(exc))
            event(log, "snapshot_unreadable", logging.ERROR, path=str(self.path),
                  error=str(exc))
            return None
        if which == "previous":
            self.on_unverified("snapshot", "", "previous")
        self.previous_key = which == "previous"
        if self.unverified_origin is not None:
            event(log, "snapshot_unverified_origin", logging.WARNING, path=str(self.path),
                  why=self.unverified_origin, epochs=list(self.own_epochs),
                  action="never written over a stored document this instance cannot verify "
                         "until it verifies one another instance wrote")
        self.signed = which != "unkeyed"
        loose = filemodes.problem(self.path, secret=False)
        if loose is not None:
            # whoever may write it could have put back an older file without a kill (or,
            # unsigned, anything): only its kills are kept, and that is said loudly
            self.previous_key = False  # (its kills only: never written back as the file)
            return self._kills_only(doc, loose, signed=self.signed)
        return doc

    def _foreign(self, body: bytes, sealed: bytes | None) -> None:
        """Raise Foreign when the file is another deployment's: its body names another
        prefix, and (`sealed`: it did not verify as ours) it verifies as that one's, with
        our key (another fleet sharing the key, a copied file). Its kills are that fleet's:
        kept as an untrusted file's are, a re-seed wrote them into this fleet's store.
        Files written before the prefix was named in the body: their MAC alone tells."""
        named = named_prefix(body)
        if named is None or named == self.deployment:
            return
        if sealed is not None:
            try:
                self.keys.bound("snapshot\x00" + named).open(b"snapshot", sealed)
            except Unverified:
                return  # (edited, or another key: an untrusted file, its kills kept)
        raise Foreign(named[:64], self.deployment)

    def _newer(self, body: bytes, exc: NewerDocument) -> StateDoc:
        """A snapshot a newer version wrote (a rollback past it): its kills this version
        reads, kept and said (snapshotbody.newer_kills), never counted as tampering."""
        doc, unread = newer_kills(body)
        rollbacks = newer_rollbacks(body)
        why = (f"written by a newer version of killgate ({exc.what}); its kills this "
               "version reads are enforced" + (
            f", and its latched rollbacks ({', '.join(sorted(rollbacks)[:8])})"
            if rollbacks else "") + ", nothing else of it" + (
            f", not these of a kind it does not know: {', '.join(unread[:8])}"
            + (f" and {len(unread) - 8} more" if len(unread) > 8 else "") if unread else "")
            + " (roll forward, or make them again through this version)")
        return self._kills_only(doc, why, signed=True, rollbacks=rollbacks)

    def _kills_only(self, doc: StateDoc, why: str, signed: bool = False,
                    cause: Cause = "other",
                    rollbacks: dict[str, RouteOverride] | None = None) -> StateDoc:
        """Keep the kills of a file not trusted for the rest, and say so (`why`)."""
        self.kills_only = why
        if not signed:  # (a signed file loosely permissioned is not a failed verification)
            self.on_unverified("snapshot", f"{self.path}: {why}: only its kills are kept", None,
                               cause)
        event(log, "snapshot_untrusted", logging.ERROR, path=str(self.path), error=why,
              kept="kills only" if not rollbacks else "kills and latched rollbacks",
              kills=sorted(doc.kills))
        return kills_only(doc, rollbacks)
