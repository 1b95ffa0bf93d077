"""Client half of the two-process test: calls the server inside a linked Opik subtree.

Usage: python linked_client.py URL SPANS_JSON_PATH [--hyphenated]

Starts a boundary span placed at the top of a fresh Opik trace (``attach_to_parent`` on
synthetic headers carrying a generated trace id), a child span for the outgoing call,
passes ``get_distributed_trace_headers()`` on with ``requests`` (with ``--hyphenated``,
under the ``opik-trace-id`` spelling that survives gunicorn and nginx), and writes its
finished spans (name, attributes) as JSON to SPANS_JSON_PATH.
"""

import json
import sys

import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opik_otel import OpikSpanProcessor, attach_to_parent, generate_id, get_distributed_trace_headers


def main():
    url, spans_path = sys.argv[1], sys.argv[2]
    hyphenated = "--hyphenated" in sys.argv[3:]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(OpikSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.services.linked_client")

    with tracer.start_as_current_span("client.root") as root:
        if not attach_to_parent(root, {"opik_trace_id": generate_id()}):
            raise SystemExit("could not attach the client root span")
        with tracer.start_as_current_span("client.call"):
            headers = get_distributed_trace_headers()
            if headers is None:
                raise SystemExit("no distributed trace headers inside the subtree")
            if hyphenated:
                headers = {name.replace("_", "-"): value for name, value in headers.items()}
            response = requests.get(url, headers=headers, timeout=10)
            response.raise_for_status()
            if response.json() != {"attached": True}:
                raise SystemExit(f"server did not attach: {response.text}")

    spans = [{"name": s.name, "attributes": dict(s.attributes)} for s in exporter.get_finished_spans()]
    with open(spans_path, "w") as f:
        json.dump({"sent_headers": headers, "spans": spans}, f)
    provider.shutdown()


if __name__ == "__main__":
    main()
