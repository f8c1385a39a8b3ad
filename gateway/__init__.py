"""killgate: an inference gateway that makes a bad model release survivable.

Layers (an import points to the same layer or lower, never upward):
composition (cli, app, server) → handlers (proxy, admin) → adapters (upstream,
state, probes, telemetry, audit) → pure domain (routing, model) → foundations
(errors, config, log).
"""

__version__ = "0.1.0"
