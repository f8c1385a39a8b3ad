"""killgate: an inference gateway that makes a bad model release survivable.

Layers (an import points to the same layer or lower, never upward):
composition (cli, server, app) → handlers (proxy, admin, rollout, reload) → adapters
(upstream, probes, alerts, state) → pure domain (routing, snapshot, model, overrides,
health, analysis, audit, ...) → foundations (errors, config, log). See README.
"""

__version__ = "0.1.0"
