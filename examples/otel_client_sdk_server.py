"""OTel-first client → service instrumented with the Opik SDK.

The client's root span gets an Opik trace id at start (``configure()``), so it can hand
the trace to an Opik SDK service, which only ever joins traces and never creates their
rows: ``OpikExporter`` writes the row for the trace the client minted.

Run: ``python examples/otel_client_sdk_server.py``
"""

import sys

import requests
from flask import Flask, request

import opik_otel
from _common import opik_target, python_service, report, serve


def run_server() -> None:
    import opik

    app = Flask(__name__)

    @opik.track(name="summarize")
    def summarize(text: str) -> str:
        return text[:20]

    @app.post("/summarize")
    def handle():  # type: ignore[no-untyped-def]
        # Reading the headers with opik_otel accepts both spellings and any id form.
        link = opik_otel.extract_opik_distributed_trace_attributes(request.headers)
        headers = None
        if link is not None:
            headers = {"opik_trace_id": link.opik_trace_id, "opik_parent_span_id": link.opik_parent_span_id}
        return {"summary": summarize(request.json["text"], opik_distributed_trace_headers=headers)}

    serve(app, on_shutdown=opik.flush_tracker)


def run_client() -> int:
    with opik_target("opik-otel-client-to-sdk") as local:
        server = python_service("Opik SDK service", __file__, "serve")
        try:
            tracing = opik_otel.configure()
            tracer = tracing.tracer_provider.get_tracer("client")
            with tracer.start_as_current_span("pipeline", attributes={"input.text": "OpenTelemetry meets Opik"}):
                headers = opik_otel.get_distributed_trace_headers(hyphenated=True)
                reply = requests.post(f"{server.url}/summarize", json={"text": "OpenTelemetry meets Opik"}, headers=headers, timeout=10)
                print(f"service replied {reply.json()}")
            tracing.force_flush()
        finally:
            server.stop()
        return report(local, expected_traces=1)


if __name__ == "__main__":
    sys.exit(run_server() if sys.argv[1:] == ["serve"] else run_client())
