"""The agent service: a plain Flask app with no opik_otel code at all.

Run it under ``opentelemetry-instrument`` with ``OTEL_TRACES_EXPORTER=opik`` and
``OTEL_PROPAGATORS=tracecontext,baggage,opik``: its server span joins the caller's Opik
trace, its spans follow, and its outgoing ``requests`` calls carry the trace on.
``TOOL_URL`` and ``SCORER_URL`` name the services it calls.
"""

import os

import requests
from flask import Flask, request
from opentelemetry import trace

app = Flask(__name__)
tracer = trace.get_tracer("agent")


@app.post("/ask")
def ask():  # type: ignore[no-untyped-def]
    question = request.json["question"]
    with tracer.start_as_current_span("plan", attributes={"input.question": question}):
        steps = ["lookup", "score"]
    found = requests.get(f"{os.environ['TOOL_URL']}/lookup", params={"q": question}, timeout=10).json()
    score = requests.post(f"{os.environ['SCORER_URL']}/score", json=found, timeout=10).json()
    return {"steps": steps, "answer": found["result"], "score": score["score"]}


if __name__ == "__main__":
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", int(os.environ.get("PORT", "0")), app, threaded=True)
    print(f"listening on port {server.server_port}", flush=True)
    server.serve_forever()
