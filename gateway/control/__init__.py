"""The control loops: rollout, reload, probes, outgoing events and the swapped route table.

May import dataplane/ (narrow interfaces), domain/, telemetry/ and the foundations.
"""
