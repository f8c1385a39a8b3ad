"""Telemetry: Prometheus metrics, OpenTelemetry tracing, the access log.

Side channels: nothing here may fail a request. The core never imports OpenTelemetry.
May import domain/ and the foundations; never the data plane (hooks it calls are
declared where they are used).
"""
