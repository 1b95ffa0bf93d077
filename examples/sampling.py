"""Keep a fraction of traces, each whole: ``configure(sample_rate=0.25)``.

Requests linked to an Opik trace from upstream are always kept.

Run: ``python examples/sampling.py``
"""

import sys

import opik_otel
from _common import opik_target, report


def main() -> int:
    with opik_target("opik-otel-sampling") as local:
        tracing = opik_otel.configure(sample_rate=0.25)
        tracer = tracing.tracer_provider.get_tracer("my-app")
        kept = 0
        for index in range(40):
            with tracer.start_as_current_span(f"request {index}"):
                kept += opik_otel.get_opik_trace_id() is not None
                with tracer.start_as_current_span("work"):
                    pass
        tracing.force_flush()
        print(f"{kept} of 40 traces kept")
        return report(local, expected_traces=kept)


if __name__ == "__main__":
    sys.exit(main())
