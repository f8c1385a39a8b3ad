"""The pure domain: routing, health, analysis, overrides, the state document, audit chain.

No I/O, no asyncio, no third-party I/O libraries; imports only the foundations.
"""
