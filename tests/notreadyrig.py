"""The route the "model not loaded" tests share: one `protocol: v2` route over /v2/models,
v1 its stable, ejected after 3 gateway failures in a row."""

from __future__ import annotations

__all__ = ["v2_routes"]


def v2_routes(p1: int, p2: int, w1: int) -> str:
    """v1 at port `p1` with weight `w1`, v2 at `p2` with the rest of 100."""
    return f"""\
- name: models
  match: {{path_prefix: /v2/models}}
  protocol: v2
  stable: v1
  outlier: {{consecutive_gateway_failures: 3, base_ejection: 30s}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: {w1}}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: {100 - w1}}}
"""
