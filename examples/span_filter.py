"""Only LLM spans reach Opik: ``configure(span_filter="llm")``.

The request's DB and HTTP spans are left out; the LLM call hangs under the request's
root span (its nearest kept ancestor) and the tool call under the LLM call.

Run: ``python examples/span_filter.py``
"""

import sys

import opik_otel
from _common import opik_target, report


def main() -> int:
    with opik_target("opik-otel-span-filter") as local:
        tracing = opik_otel.configure(span_filter="llm")
        tracer = tracing.tracer_provider.get_tracer("my-app")
        with tracer.start_as_current_span("handle request"):
            with tracer.start_as_current_span("SELECT documents", attributes={"db.system": "postgresql"}):
                with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.system": "openai"}):
                    with tracer.start_as_current_span("POST /v1/chat", attributes={"http.request.method": "POST"}):
                        with tracer.start_as_current_span("search tool", attributes={"gen_ai.operation.name": "execute_tool"}):
                            pass
        tracing.force_flush()
        return report(local, expected_traces=1)


if __name__ == "__main__":
    sys.exit(main())
