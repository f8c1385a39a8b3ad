"""Telemetry: Prometheus metrics, OpenTelemetry tracing, the access log.

Side channels: nothing here may fail a request. The core never imports OpenTelemetry.
"""
