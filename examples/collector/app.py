"""An app whose spans travel through an OpenTelemetry Collector to Opik.

``configure(otlp_endpoint=...)`` sends spans to the Collector (without the API key: the
Collector adds Opik's credentials itself), while the trace rows of traces this app starts
go straight to Opik's REST API, configured from the usual ``OPIK_*`` settings::

    export OPIK_URL_OVERRIDE=$OPIK_URL     # the same Opik as the Collector's exporter
    export OPIK_API_KEY=... OPIK_WORKSPACE=... OPIK_PROJECT_NAME=...   # same as the Collector
    python app.py

``OTEL_COLLECTOR_TRACES_ENDPOINT`` overrides the Collector address
(default ``http://localhost:4318/v1/traces``).
"""

import os
import time

from opentelemetry import trace

import opik_otel

COLLECTOR_TRACES_ENDPOINT = os.environ.get("OTEL_COLLECTOR_TRACES_ENDPOINT", "http://localhost:4318/v1/traces")


def main() -> None:
    tracing = opik_otel.configure(otlp_endpoint=COLLECTOR_TRACES_ENDPOINT, tags=["collector-example"])
    tracer = trace.get_tracer("collector-example")

    with tracer.start_as_current_span("handle-order") as root:
        root.set_attribute("input.order_id", "A-1001")
        print("Opik trace id:", opik_otel.get_opik_trace_id(), flush=True)
        with tracer.start_as_current_span("check-stock") as span:
            span.set_attribute("output.in_stock", True)
        with tracer.start_as_current_span("charge-card") as span:
            time.sleep(0.01)
            span.set_attribute("output.charged", 42.5)
        root.set_attribute("output.status", "shipped")

    tracing.shutdown()  # flushes: spans to the Collector, the trace row to Opik


if __name__ == "__main__":
    main()
