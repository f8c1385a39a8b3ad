"""A demo model server in its own process, for tests that kill and restart a backend.

    python -m tests.proc_backend PORT VERSION
"""

from __future__ import annotations

import sys

from aiohttp import web

from gateway.cli.demo import model_app

if __name__ == "__main__":
    web.run_app(model_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]),
                print=None, access_log=None, shutdown_timeout=0.1)
