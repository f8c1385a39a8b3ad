"""Builders the start sequence (`gateway/startup.py`) calls, one per side of a process.

Each takes the parts it wires as arguments and returns the built objects; none starts or
stops anything (lifecycles stay in startup.py and app.py) nor touches `app[...]`. Below
`startup`, above the parts: imports dataplane, admin, control, state and telemetry, never
`startup`, `app` or `server`.
"""
