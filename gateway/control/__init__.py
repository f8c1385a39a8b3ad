"""The control loops: rollout, reload, probes, outgoing events and the swapped route table.

May import state/, telemetry/, domain/ and the foundations; never admin/ or dataplane/.
"""
