"""OTel service → OTel service, linked by hand.

The client starts an OTel-first trace with ``configure()`` and sends
``get_distributed_trace_headers()``; the server places its span in that trace with
``attach_to_parent`` and ``OpikSpanProcessor`` links everything under it.

Run: ``python examples/manual_bridging.py``
"""

import sys

import requests
from flask import Flask, request

import opik_otel
from _common import opik_target, python_service, report, serve


def run_server() -> None:
    tracing = opik_otel.configure()
    tracer = tracing.tracer_provider.get_tracer("answer-service")
    app = Flask(__name__)

    @app.post("/answer")
    def answer():  # type: ignore[no-untyped-def]
        with tracer.start_as_current_span("answer", attributes={"input.question": request.json["question"]}) as span:
            attach_to_parent_ok = opik_otel.attach_to_parent(span, request.headers)
            with tracer.start_as_current_span("retrieve"):
                documents = ["opik", "otel"]
            with tracer.start_as_current_span("generate", attributes={"output.answer": "42"}):
                pass
            return {"linked": attach_to_parent_ok, "documents": documents}

    serve(app, on_shutdown=tracing.shutdown)


def run_client() -> int:
    with opik_target("opik-otel-manual-bridging") as local:
        server = python_service("answer service", __file__, "serve")
        try:
            tracing = opik_otel.configure()
            tracer = tracing.tracer_provider.get_tracer("client")
            with tracer.start_as_current_span("ask", attributes={"input.question": "meaning of life?"}):
                print(f"client trace: {opik_otel.get_opik_trace_id()}")
                headers = opik_otel.get_distributed_trace_headers(hyphenated=True)
                reply = requests.post(f"{server.url}/answer", json={"question": "meaning of life?"}, headers=headers, timeout=10)
                print(f"server replied {reply.json()}")
            tracing.force_flush()
        finally:
            server.stop()
        return report(local, expected_traces=1)


if __name__ == "__main__":
    sys.exit(run_server() if sys.argv[1:] == ["serve"] else run_client())
