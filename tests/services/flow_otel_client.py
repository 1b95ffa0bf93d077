"""OTel-first client for tests/test_multi_service.py, set up with ``opik_otel.configure()``.

Starts a trace (root span ``otel-client``, child CLIENT span ``call-agent``) and POSTs a
question to ``<url>/ask``. The linkage travels as

- ``opik-headers``: ``get_distributed_trace_headers(hyphenated=True)`` plus W3C
  ``traceparent``;
- ``baggage``: only W3C ``traceparent`` and ``baggage`` (``opik.trace_id`` /
  ``opik.span_id`` from ``context_with_opik_baggage()``), no Opik header at all.

Prints one JSON line: the Opik ids of both spans, the headers sent and the reply.

Usage: python flow_otel_client.py URL {opik-headers,baggage}
"""

import json
import sys

import requests
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import opik_otel
from opik_otel.attributes import OPIK_SPAN_ID
from opik_otel.linkage import span_attributes


def main() -> int:
    url, mode = sys.argv[1], sys.argv[2]
    tracing = opik_otel.configure(tracer_provider=TracerProvider())
    tracer = tracing.tracer_provider.get_tracer("flow-otel-client")
    with tracer.start_as_current_span("otel-client", attributes={"input.question": "What is Opik?"}) as root:
        with tracer.start_as_current_span("call-agent", kind=SpanKind.CLIENT) as call:
            headers: dict = {}
            if mode == "opik-headers":
                headers.update(opik_otel.get_distributed_trace_headers(hyphenated=True) or {})
                TraceContextTextMapPropagator().inject(headers)
            elif mode == "baggage":
                context = opik_otel.context_with_opik_baggage()
                TraceContextTextMapPropagator().inject(headers, context)
                W3CBaggagePropagator().inject(headers, context)
            else:
                raise SystemExit(f"unknown mode {mode!r}")
            response = requests.post(f"{url}/ask", json={"question": "What is Opik?"}, headers=headers, timeout=30)
            response.raise_for_status()
        result = {
            "trace_id": opik_otel.get_opik_trace_id(root),
            "root_span_id": span_attributes(root)[OPIK_SPAN_ID],
            "span_id": span_attributes(call)[OPIK_SPAN_ID],
            "headers": headers,
            "reply": response.json(),
        }
    flushed = tracing.force_flush()
    tracing.shutdown()
    print(json.dumps({**result, "flushed": flushed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
