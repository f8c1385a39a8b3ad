"""Builders the composition root (`gateway/app.py`) calls, one per side of a process.

Each takes the parts it wires as arguments and returns the built objects; none starts or
stops anything (lifecycles stay in app.py) nor touches `app[...]`. Below `app`, above
the parts: imports dataplane, admin, control, state and telemetry, never `app` or `server`.
"""
