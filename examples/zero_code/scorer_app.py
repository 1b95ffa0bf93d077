"""The scorer service: instrumented with the Opik SDK only (``@opik.track``).

The Opik SDK joins the caller's trace through ``opik_distributed_trace_headers``. The
caller's ``opik`` propagator sends both header spellings; werkzeug (like gunicorn and
nginx) drops the underscore ones, so the hyphenated ones are read here.
"""

import os

import opik
from flask import Flask, request

app = Flask(__name__)


@opik.track(name="score")
def score(answer: str) -> float:
    return round(min(1.0, len(answer) / 50), 2)


@app.post("/score")
def handle():  # type: ignore[no-untyped-def]
    headers = None
    if request.headers.get("opik-trace-id"):
        headers = {
            "opik_trace_id": request.headers["opik-trace-id"],
            "opik_parent_span_id": request.headers.get("opik-parent-span-id"),
        }
    return {"score": score(request.json["result"], opik_distributed_trace_headers=headers)}


if __name__ == "__main__":
    import signal
    import sys

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "0")), app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on port {server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        opik.flush_tracker()
