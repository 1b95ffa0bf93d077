"""A Flask service that starts traces, for tests/test_zero_code_roots.py.

No OpenTelemetry or Opik set-up: run it under ``opentelemetry-instrument`` with
``OTEL_TRACES_EXPORTER=opik`` and ``OTEL_PROPAGATORS=tracecontext,baggage,opik``.
``GET /start`` (a plain request, no tracing headers) is a local root; it calls
``{DOWNSTREAM_URL}`` through ``requests`` and answers with the Opik trace id and the
distributed-trace headers the app sees, read with opik_otel's helpers.

Run: ``opentelemetry-instrument python zero_code_root_app.py`` (wsgiref; prints
``listening on port N``) or ``opentelemetry-instrument gunicorn zero_code_root_app:app``.
"""

import os

import requests
from flask import Flask

import opik_otel

app = Flask(__name__)


@app.get("/start")
def start():  # type: ignore[no-untyped-def]
    answer = requests.get(os.environ["DOWNSTREAM_URL"], timeout=10)
    answer.raise_for_status()
    return {
        "trace_id": opik_otel.get_opik_trace_id(),
        "headers": opik_otel.get_distributed_trace_headers(),
        "downstream": answer.json(),
    }


if __name__ == "__main__":
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):  # type: ignore[no-untyped-def]  # noqa: A002
            pass

    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    print(f"listening on port {server.server_port}", flush=True)
    server.serve_forever()
