"""Middle service for tests/test_multi_service.py: a plain Flask app, no tracing code.

``POST /ask`` runs a ``plan`` span and calls ``GET {TOOL_URL}/lookup`` through
``requests`` (instrumented by ``opentelemetry-instrument``). It answers with what the
app saw of the Opik linkage headers, so a test can tell which spellings the server kept.

Run: ``opentelemetry-instrument python flow_flask_agent.py`` (werkzeug, prints
``listening on port N``; ``FLOW_SERVER=wsgiref`` serves it with the standard library's
wsgiref instead, which keeps underscore header names and comma-joins the two spellings)
or ``opentelemetry-instrument gunicorn flow_flask_agent:app``.
"""

import os

import requests
from flask import Flask, request
from opentelemetry import trace

app = Flask(__name__)
tracer = trace.get_tracer("flow-agent")


@app.post("/ask")
def ask():  # type: ignore[no-untyped-def]
    question = request.json["question"]
    with tracer.start_as_current_span("plan", attributes={"input.question": question}):
        pass
    found = requests.get(f"{os.environ['TOOL_URL']}/lookup", params={"q": question}, timeout=10)
    found.raise_for_status()
    seen = sorted(name.lower() for name in request.headers.keys() if "opik" in name.lower())
    return {
        "answer": found.json()["result"],
        "seen": seen,
        "baggage": request.headers.get("baggage"),
        "trace_id_header": request.headers.get("opik-trace-id"),
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    if os.environ.get("FLOW_SERVER") == "wsgiref":
        from wsgiref.simple_server import WSGIRequestHandler, make_server as make_wsgiref_server

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, format, *args):  # type: ignore[no-untyped-def]  # noqa: A002
                pass

        server = make_wsgiref_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    else:
        from werkzeug.serving import make_server

        server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"listening on port {server.server_port}", flush=True)
    server.serve_forever()
