"""OTel-first Flask server for tests/test_otel_first_chain.py.

Uses ``opik_otel.configure()`` (settings from ``OPIK_*`` environment variables) and
``attach_to_parent(span, request.headers)`` on the boundary span, with nested children.
Served by wsgiref, which keeps header names containing underscores (``opik_trace_id``);
Werkzeug's development server, gunicorn and nginx drop them.

Prints ``{"port": N}`` once listening; stops on SIGTERM.
"""

import json
import os
import signal
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from flask import Flask, jsonify, request
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

import opik_otel

tracing = opik_otel.configure(spool_directory=os.environ.get("OTEL_FIRST_SPOOL_DIR"))
tracer = trace.get_tracer("otel_first_server")
app = Flask(__name__)


@app.route("/work")
def work():
    upstream = propagate.extract(request.headers)  # the client's OTel span, as instrumentation does
    with tracer.start_as_current_span("server-handle", context=upstream, kind=SpanKind.SERVER) as span:
        attached = opik_otel.attach_to_parent(span, request.headers)
        with tracer.start_as_current_span("server-step"):
            with tracer.start_as_current_span("server-leaf") as leaf:
                leaf.set_attribute("output.rows", 3)
        result = {"attached": attached, "trace_id": opik_otel.get_opik_trace_id()}
    # A test service: flush per request so the test need not wait for the batch delay.
    tracing.force_flush()
    return jsonify(result)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def main() -> int:
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps({"port": server.server_port}), flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        tracing.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
