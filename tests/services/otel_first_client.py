"""OTel-first client for tests/test_otel_first_chain.py.

Starts its trace with plain OpenTelemetry under ``opik_otel.configure()`` (settings from
``OPIK_*`` environment variables), calls a server with Opik's distributed-trace headers
plus W3C ``traceparent``, and prints a JSON report on its last stdout line.

Usage: python otel_first_client.py <server url>
"""

import json
import os
import sys

import requests
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

import opik_otel


def main() -> int:
    server_url = sys.argv[1]
    tracing = opik_otel.configure(spool_directory=os.environ.get("OTEL_FIRST_SPOOL_DIR"))
    tracer = trace.get_tracer("otel_first_client")
    with tracer.start_as_current_span("client-job") as root:
        root.set_attribute("input.question", "how many orders shipped?")
        trace_id = opik_otel.get_opik_trace_id()
        with tracer.start_as_current_span("call-server", kind=SpanKind.CLIENT):
            headers = dict(opik_otel.get_distributed_trace_headers() or {})
            opik_headers = dict(headers)
            propagate.inject(headers)  # W3C traceparent too, as HTTP instrumentation would
            response = requests.get(server_url, headers=headers, timeout=10)
            response.raise_for_status()
            answer = response.json()
        root.set_attribute("output.answer", json.dumps(answer))
    flushed = tracing.force_flush()
    tracing.shutdown()
    print(json.dumps({"trace_id": trace_id, "headers": opik_headers, "server": answer, "flushed": flushed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
