"""Server half of the two-process test: joins the Opik trace named by request headers.

Usage: python linked_server.py SPANS_JSON_PATH

Listens on 127.0.0.1 on a port the OS picks and prints ``PORT <n>`` on stdout. Each
``GET /work`` request gets a boundary span attached with ``attach_to_parent`` and two
nested child spans; after the request's spans have ended, every finished span so far is
written (name, attributes) as JSON to SPANS_JSON_PATH. ``GET /shutdown`` stops it.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opik_otel import OpikSpanProcessor, attach_to_parent

SPANS_PATH = sys.argv[1]
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(OpikSpanProcessor())
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("tests.services.linked_server")
WRITE_LOCK = threading.Lock()


def write_spans():
    spans = [{"name": s.name, "attributes": dict(s.attributes)} for s in EXPORTER.get_finished_spans()]
    with WRITE_LOCK:
        tmp = SPANS_PATH + ".tmp"
        with open(tmp, "w") as f:
            json.dump(spans, f)
        os.replace(tmp, SPANS_PATH)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/shutdown":
            self._reply(200, {"ok": True})
            threading.Thread(target=self.server.shutdown, daemon=True).start()
            return
        if self.path != "/work":
            self._reply(404, {"error": "not found"})
            return
        with TRACER.start_as_current_span("server.request") as span:
            attached = attach_to_parent(span, self.headers)
            with TRACER.start_as_current_span("server.child"):
                with TRACER.start_as_current_span("server.grandchild"):
                    pass
        write_spans()
        self._reply(200, {"attached": attached})

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        PROVIDER.shutdown()


if __name__ == "__main__":
    main()
