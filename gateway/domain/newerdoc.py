"""A document a newer version wrote: the rule across versions, and its refusal.

Owns `FORMAT` (the state document's format), `NewerDocument` (the refusal of a verified
document this version cannot apply faithfully) and `newer`, which tells such a document
from a merely invalid one by pydantic's account of what it refused. Pure, no I/O;
`domain.statedoc` validates with it and re-exports FORMAT and NewerDocument.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["FORMAT", "NOT_WRITTEN_OVER", "NewerDocument", "newer"]

#: the document's format. The rule across versions (a rolling upgrade shares one store,
#: and an instance of the older version rewrites the whole document at each write): a
#: field this version does not know, anywhere in the document's typed parts, or a
#: `format` past this one, makes a verified document a NewerDocument: never applied
#: without what it does not know, never written over (a re-seed would drop it), said
#: loudly (StoreFromNewerVersion: not synced, the staleness policy applies). A newer
#: version raises `format` where what it adds changes what an older one would enforce
#: (a new kind of kill, a new value of a known field), and writes new fields only once no
#: older instance reads the store. The open maps (identities, progress, drill results,
#: approvals) keep what they hold whole; approvals judge their own records' `format`.
FORMAT = 1

#: how a refusal of a newer version's document ends: what this version does with it (a
#: replay of one, no newer than an instance holds, is written over: refuseddoc.as_replay)
NOT_WRITTEN_OVER = "not applied without what this version does not know, nor written over"


class NewerDocument(ValueError):
    """A verified document a newer version wrote, which this one cannot apply faithfully
    (its `format` past FORMAT, or fields this one does not know): `fields` names them."""

    def __init__(self, message: str, fields: tuple[str, ...] = (), what: str = "") -> None:
        super().__init__(message)
        self.fields = fields
        self.what = what  # (what this version does not know, said)
        #: the generation the document states (None: none readable): one older than a
        #: document an instance holds is no newer writer's current state, but a replay
        self.generation: int | None = None


def newer(exc: ValidationError) -> NewerDocument | None:
    """The refusal of a document written by a newer version (None: it is not one, just
    invalid): one naming a format past ours, or whose only problems are fields this
    version does not know."""
    errors = exc.errors()
    past = [e for e in errors if e["loc"] == ("format",) and e["type"] == "less_than_equal"]
    unknown = [".".join(map(str, e["loc"])) for e in errors
               if e["type"] == "unexpected_keyword_argument"]
    if not past and len(unknown) != len(errors):
        return None
    said = ([f"format {past[0]['input']!r}, this version's is {FORMAT}"] if past else []) + (
        [f"fields this version does not know: {', '.join(unknown[:4])}"
         + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")] if unknown else [])
    return NewerDocument(f"written by a newer version of killgate ({'; '.join(said)}): "
                         + NOT_WRITTEN_OVER, tuple(unknown), "; ".join(said))
