"""Per-request thread, user, tags and metadata: ``opik_otel.trace_attributes(...)``.

Run: ``python examples/trace_attributes.py``
"""

import sys

import opik_otel
from _common import opik_target, report


def main() -> int:
    with opik_target("opik-otel-trace-attributes") as local:
        tracing = opik_otel.configure(tags=["my-service"])
        tracer = tracing.tracer_provider.get_tracer("my-app")
        for turn in range(2):
            with opik_otel.trace_attributes(thread_id="conversation-7", user_id="user-42", tags=["beta"]):
                with tracer.start_as_current_span(f"turn {turn}"):
                    pass
        tracing.force_flush()
        if local is not None:
            local.wait_for_traces(2)
            for row in local.traces():
                print(f"{row.name}: thread={row.thread_id} tags={row.tags} user={row.metadata['user_id']}")
        return report(local, expected_traces=2)


if __name__ == "__main__":
    sys.exit(main())
