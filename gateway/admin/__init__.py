"""The admin listener: health, readiness, metrics, and the authenticated /v1 API."""
