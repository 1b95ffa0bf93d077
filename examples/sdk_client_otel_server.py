"""Client instrumented with the Opik SDK → OTel service.

The client's ``@opik.track`` function sends ``opik_context.get_distributed_trace_headers()``;
the OTel service joins that trace with ``attach_to_parent`` and ``OpikSpanProcessor``
links its whole subtree under the client's span. The Opik SDK owns the trace row.

Run: ``python examples/sdk_client_otel_server.py``
"""

import sys

import requests
from flask import Flask, request

import opik_otel
from _common import opik_target, python_service, report, serve


def run_server() -> None:
    tracing = opik_otel.configure()
    tracer = tracing.tracer_provider.get_tracer("search-service")
    app = Flask(__name__)

    @app.get("/search")
    def search():  # type: ignore[no-untyped-def]
        with tracer.start_as_current_span("search") as span:
            opik_otel.attach_to_parent(span, request.headers)
            with tracer.start_as_current_span("vector-lookup"):
                hits = ["doc-1", "doc-2"]
            return {"hits": hits}

    serve(app, on_shutdown=tracing.shutdown)


def run_client() -> int:
    with opik_target("opik-otel-sdk-to-otel") as local:
        import opik
        from opik import opik_context

        server = python_service("OTel search service", __file__, "serve")

        @opik.track(name="answer-question")
        def answer_question(question: str) -> list:
            headers = dict(opik_context.get_distributed_trace_headers())
            # werkzeug, gunicorn and nginx drop underscore header names: send both spellings.
            headers.update({name.replace("_", "-"): value for name, value in headers.items()})
            return requests.get(f"{server.url}/search", params={"q": question}, headers=headers, timeout=10).json()["hits"]

        try:
            print(f"hits: {answer_question('what is opik?')}")
            opik.flush_tracker()
        finally:
            server.stop()
        return report(local, expected_traces=1)


if __name__ == "__main__":
    sys.exit(run_server() if sys.argv[1:] == ["serve"] else run_client())
