"""The data plane: our HTTP server side, the proxy, backend connections, bodies and headers.

May import domain/, telemetry/ and the foundations; never state/, admin/ or redis.
"""
