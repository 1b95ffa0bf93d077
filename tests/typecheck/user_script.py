"""A user's script written from the README, checked by `mypy --strict` in CI (.ci/run).

CI copies it out of the checkout before checking it, so `import opik_otel` resolves only
through the installed package: a type checker must be able to follow the editable install.
"""

from typing import Dict, List, Optional

from opentelemetry.sdk.trace import TracerProvider

import opik_otel
from opik_otel.testing import LocalOpik, SpanRecord


def run() -> int:
    with LocalOpik() as opik:
        tracing = opik_otel.configure(
            url=opik.url, project_name="checkout-service", tracer_provider=TracerProvider()
        )
        tracer = tracing.tracer_provider.get_tracer(__name__)
        with tracer.start_as_current_span("handle-order"):
            trace_id: Optional[str] = opik_otel.get_opik_trace_id()
            headers: Optional[Dict[str, str]] = opik_otel.get_distributed_trace_headers(
                hyphenated=True
            )
        with tracer.start_as_current_span("downstream-service") as server_span:
            opik_otel.attach_to_parent(server_span, headers or {})
        tracing.force_flush()
        queued: int = tracing.span_processor.stats["queued"]
        sent: int = tracing.exporter.stats["requests_sent"]
        spans: List[SpanRecord] = opik.spans()
        tracing.shutdown()
        print(trace_id, queued, sent, opik.trees())
        return len(spans) + len(opik.orphans())


if __name__ == "__main__":
    run()
