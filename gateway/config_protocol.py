"""Routes that look like a model protocol's but declare none (for `killgate check`'s notes):
`protocol` left out (the default, `http`), under which a version that answers "model not found / not
ready" (an unloaded model) has that answer reach its clients and is never ejected for it,
and a shadow compares whole JSON answers (a V2 answer's `model_version` differs between any
two versions: no comparison ever agrees). A new user's pass (revnewuser9) copied routes
without it. Pure; the schema only.
"""

from __future__ import annotations

from gateway.config import Config

__all__ = ["protocol_hints"]

#: path prefixes that are one protocol's inference paths, whatever the server
_V2 = "/v2/models"
_OPENAI = ("/v1", "/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def protocol_hints(cfg: Config) -> list[str]:
    out = []
    for i, rc in enumerate(cfg.routes):
        if rc.protocol != "http" or "protocol" in rc.model_fields_set:
            continue  # (one or the other written out: the choice is made)
        prefix = (rc.match.path_prefix or "").rstrip("/")
        if prefix == _V2 or prefix.startswith(_V2 + "/"):
            guess = "v2"
        elif rc.match.model is not None or prefix in _OPENAI:
            guess = "openai"
        else:
            continue
        out.append(f"routes[{i}] ({rc.name}): protocol is http (the default) on what looks "
                   f"like {'an Open Inference Protocol (V2)' if guess == 'v2' else 'an OpenAI'}"
                   f" route: a version that unloads its model answers its clients 404 and is "
                   f"never ejected for it"
                   + (", and a shadow compares whole JSON answers" if rc.shadow else "")
                   + f"; set protocol: {guess} if its servers speak it (or write "
                   f"protocol: http)")
    return out
