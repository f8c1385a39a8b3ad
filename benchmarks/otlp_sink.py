"""An OTLP/HTTP collector stand-in for the tracing benchmark: takes every export, answers 200.

    python benchmarks/otlp_sink.py --port P

Reads the whole body (as a collector must) and answers an empty protobuf response, on
aiohttp. `GET /` answers its counts: posts, bytes and spans (trace exports are decoded with
opentelemetry-proto to count their spans, so a benchmark can wait until every span it caused
has arrived). Its CPU is not what is measured, only that the gateway's exports succeed.
"""

from __future__ import annotations

import argparse

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    stats = {"posts": 0, "bytes": 0, "spans": 0}

    async def take(req: web.Request) -> web.Response:
        body = await req.read()
        stats["posts"] += 1
        stats["bytes"] += len(body)
        if req.path == "/v1/traces":
            msg = ExportTraceServiceRequest.FromString(body)
            stats["spans"] += sum(len(ss.spans) for rs in msg.resource_spans
                                  for ss in rs.scope_spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def health(req: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", take)
    app.router.add_post("/v1/metrics", take)
    app.router.add_get("/", health)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
