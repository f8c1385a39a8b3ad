"""The config of shadow traffic: `routes[].shadow` (CONTRACT §5.5).

Owns the frozen pydantic models of mirroring (sample, limits, timeouts), comparison
(`v2_tensors` | `openai_chat` | `json`, each with its options), the noise floor and the
disagreement store (the JSON paths they name: `config_jsonpaths`); and `problems()`, the
checks against the rest of the route. Imports only pydantic and the config building blocks
(`gateway.config_types`, `gateway.config_jsonpaths`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gateway.config_jsonpaths import Paths
from gateway.config_types import HEADER_NAME, Deadline, Frozen, Timeouts, finite

__all__ = [
    "ANSWER_TEXT_MIN",
    "COMPARE_KINDS",
    "CompareConfig",
    "DisagreementsConfig",
    "JsonCompare",
    "NoiseConfig",
    "OpenAIChatCompare",
    "ShadowConfig",
    "V2TensorsCompare",
    "problems",
]

COMPARE_KINDS = ("v2_tensors", "openai_chat", "json")
#: `compare: json` with no `answer_paths`: a string longer than this, with whitespace in it,
#: is taken for the answer (RFC 7231 dates are 29 characters, "2026-12-06 02:18:51.123456+00:00"
#: is 32; ids, UUIDs, hashes and tokens have no whitespace at any length)
ANSWER_TEXT_MIN = 32
#: the comparison a route gets when `compare` is left out, by its `protocol`
DEFAULT_COMPARE = {"v2": "v2_tensors", "openai": "openai_chat", "http": "json"}

# ---------------------------------------------------------------- comparison


class V2TensorsCompare(Frozen):
    """Open Inference Protocol answers: per output tensor, by name."""

    #: values agree when |shadow - primary| <= atol + rtol * |primary| (numpy's isclose)
    atol: float = Field(default=1e-6, ge=0)
    rtol: float = Field(default=1e-5, ge=0)
    #: classifiers: judge by the top class of each row (the last axis), not the scores
    argmax: bool = False
    #: classifiers: judge by the set of the top K classes of each row
    top_k: int | None = Field(default=None, ge=1, le=1000)
    #: compare only these outputs (default: every output of the primary's answer)
    outputs: list[str] | None = Field(default=None, min_length=1)  # ([]: nothing compared)

    @field_validator("atol", "rtol")
    @classmethod
    def _tolerance(cls, v: float) -> float:
        return finite(v)


class OpenAIChatCompare(Frozen):
    """OpenAI-style chat/completions answers (whole JSON or an SSE stream), per choice."""

    #: which text equality counts: exact bytes, normalized (Unicode NFKC, case and
    #: whitespace folded), or none (text not judged; finish_reason, JSON validity, length are)
    text: Literal["exact", "normalized", "none"] = "normalized"
    finish_reason: bool = True
    #: a relative change of the text's length above this is a disagreement (default: only
    #: measured)
    max_length_change: float | None = Field(default=None, gt=0)

    @field_validator("max_length_change")
    @classmethod
    def _change(cls, v: float | None) -> float | None:
        return v if v is None else finite(v)


class JsonCompare(Frozen):
    """Any JSON answer: a structural diff."""

    #: paths whose values never count (ids, timestamps): `id`, `data[*].created`, `*.trace`
    ignore: Paths = Field(default_factory=list)
    #: the fields that ARE the answer (`choices[*].message.content`, `outputs[*].data`): a
    #: difference there excused as noise is no agreement for the promotion gate. Default
    #: (left out): a string longer than ANSWER_TEXT_MIN characters with whitespace in it,
    #: a model's text (ids, hashes, tokens have no space; a timestamp with one is shorter);
    #: `[]`: no field is the answer
    answer_paths: Paths | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _not_ignored(self) -> JsonCompare:
        both = sorted(set(self.ignore) & set(self.answer_paths or ()))
        if both:
            raise ValueError(f"answer_paths {', '.join(map(repr, both))} also in ignore: a field is either "
                             "the answer (compared, never excused) or ignored, not both")
        return self


def _one_kind(v: Any) -> Any:
    if isinstance(v, str):
        if v not in COMPARE_KINDS:
            raise ValueError(f"must be one of {', '.join(COMPARE_KINDS)} (or a mapping of one "
                             "of them to its options)")
        return {v: {}}
    if isinstance(v, dict):
        return {k: ({} if o is None else o) for k, o in v.items()}
    return v


class CompareConfig(Frozen):
    """Exactly one of the kinds; `compare: json` is short for `compare: {json: {}}`."""

    v2_tensors: V2TensorsCompare | None = None
    openai_chat: OpenAIChatCompare | None = None
    json_: JsonCompare | None = Field(default=None, alias="json")

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> CompareConfig:
        if sum(x is not None for x in (self.v2_tensors, self.openai_chat, self.json_)) != 1:
            raise ValueError(f"name exactly one of {', '.join(COMPARE_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        if self.v2_tensors is not None:
            return "v2_tensors"
        return "openai_chat" if self.openai_chat is not None else "json"


class _KindOrOptions:
    """The schema of `compare`: a kind's name alone, as `_one_kind` takes it, or the mapping
    (`killgate schema` said the mapping only: `compare: json` was marked wrong)."""

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        return {"anyOf": [{"enum": list(COMPARE_KINDS)}, handler(core)]}


CompareSpec = Annotated[CompareConfig, BeforeValidator(_one_kind), _KindOrOptions()]


class NoiseConfig(Frozen):
    """Diffy's noise floor: a sample of mirrored requests also goes to the primary's
    version a second time; where the primary disagrees with itself, a difference of the
    shadow is not counted against it."""

    #: share of mirrored requests that also get the second primary copy
    sample: float = Field(default=1.0, ge=0, le=1)
    #: a path where the primary differs from itself in at least this share of the pairs ...
    threshold: float = Field(default=0.05, gt=0, le=1)
    #: ... and where the shadow differs at most this much more often (relative), is noise
    #: for every request (Diffy's relative threshold) ...
    relative: float = Field(default=0.2, ge=0, le=100)
    #: ... once there are this many noise pairs
    min_pairs: int = Field(default=10, ge=1, le=1_000_000)


class DisagreementsConfig(Frozen):
    #: sampled disagreements kept per process (request and both answers)
    keep: int = Field(default=20, ge=0, le=1000)
    #: bytes of each body kept in a record (the rest is cut, and says so)
    max_body: int = Field(default=4096, ge=0, le=1 << 20)
    #: JSON paths replaced by "[redacted]" in the stored request and answers
    redact: Paths = Field(default_factory=list)


class ShadowTimeouts(Timeouts):
    """routes[].shadow.timeouts: a copy gives up sooner than the client's request."""

    total: Deadline = 30.0  # (as Timeouts': > 0, at most an hour)


class ShadowConfig(Frozen):
    #: the version that gets the copies: declared in the route's `versions` with weight 0
    version: str = Field(min_length=1, max_length=64)
    #: share of the route's answered requests that are mirrored
    sample: float = Field(default=0.1, ge=0, le=1)
    #: copies in flight per process; beyond, a copy is dropped (and counted), never queued
    max_inflight: int = Field(default=32, ge=1, le=100_000)
    #: requests with a larger body are not mirrored
    max_request_bytes: int = Field(default=64 * 1024, ge=0, le=64 << 20)
    #: answers are assembled for comparison up to this size; larger ones are not compared
    max_answer_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    #: default: by the route's protocol (v2: v2_tensors, openai: openai_chat, http: json)
    compare: CompareSpec | None = None
    noise: NoiseConfig | None = None
    #: the copies' own (they go through a connection pool of their own, too)
    timeouts: ShadowTimeouts = Field(default_factory=ShadowTimeouts)
    disagreements: DisagreementsConfig = Field(default_factory=DisagreementsConfig)
    #: the client's request fields the copy to the shadow does not carry (credentials a
    #: shadow run elsewhere must not get: authorization, cookie, x-api-key); lower-cased
    drop_headers: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("sample")
    @classmethod
    def _share(cls, v: float) -> float:
        return finite(v)

    @field_validator("drop_headers")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
        return [name.lower() for name in v]

    def compare_for(self, protocol: str) -> CompareConfig:
        if self.compare is not None:
            return self.compare
        return _DEFAULTS[DEFAULT_COMPARE.get(protocol, "json")]


#: the comparison of each kind with its default options, built once (asked per copy)
_DEFAULTS = {k: CompareConfig.model_validate(_one_kind(k)) for k in COMPARE_KINDS}


def problems(index: int, route: Any, versions_of: dict[str, str]) -> list[tuple[str, str]]:
    """(yaml path, message) for a route's shadow against the rest of the file.
    `versions_of`: version name -> the route that declares it, for every other route."""
    base = f"routes[{index}]"
    out: list[tuple[str, str]] = []
    analysis = route.analysis
    sh: ShadowConfig | None = route.shadow
    if sh is None:
        if analysis is not None and analysis.min_shadow_agreement is not None:
            out.append((f"{base}.analysis.min_shadow_agreement",
                        "needs a shadow on this route (routes[].shadow)"))
        return out
    names = [v.name for v in route.versions]
    if sh.version not in names:
        other = versions_of.get(sh.version)
        where = (f"{sh.version!r} is a version of route {other!r}, not of {route.name!r}"
                 if other is not None else f"names no version of this route ({', '.join(names)})")
        out.append((f"{base}.shadow.version",
                    where + "; declare the shadow in this route's versions with weight 0"))
        return out
    if sh.version == route.stable:
        out.append((f"{base}.shadow.version",
                    f"{sh.version!r} is the route's stable: the primary cannot be its own "
                    "shadow (a shadow never answers clients)"))
        return out
    for j, v in enumerate(route.versions):
        if v.name == sh.version and v.weight > 0:
            out.append((f"{base}.versions[{j}].weight",
                        f"must be 0: {v.name!r} is the route's shadow and never answers a "
                        "client (give it traffic at run time with promote or weights)"))
    return out
