"""Flask server using the real Opik SDK, for tests/test_otel_first_chain.py.

Joins the caller's trace the Opik way: a ``@opik.track`` function called with
``opik_distributed_trace_headers=...``, then ``opik.flush_tracker()``. Configured by
``OPIK_URL_OVERRIDE`` / ``OPIK_PROJECT_NAME``. Served by wsgiref, which keeps header
names containing underscores. Prints ``{"port": N}`` once listening; stops on SIGTERM.
"""

import json
import signal
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

import opik
from flask import Flask, jsonify, request

app = Flask(__name__)


@opik.track(name="sdk-handle")
def handle(question: str) -> str:
    return lookup(question)


@opik.track(name="sdk-lookup")
def lookup(question: str) -> str:
    return question.upper()


def _first(value):
    return value.split(",")[0].strip() if value else value


@app.route("/work")
def work():
    # wsgiref joins opik_trace_id and opik-trace-id (an OpikPropagator caller sends
    # both) into one "<id>,<id>" value (contract section 6); the SDK takes one id.
    headers = {
        "opik_trace_id": _first(request.headers.get("opik_trace_id")),
        "opik_parent_span_id": _first(request.headers.get("opik_parent_span_id")),
    }
    answer = handle("shipped orders", opik_distributed_trace_headers=headers)
    opik.flush_tracker()
    return jsonify({"answer": answer, "received": headers})


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def main() -> int:
    server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps({"port": server.server_port}), flush=True)
    server.serve_forever(poll_interval=0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
