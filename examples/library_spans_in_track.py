"""Library OTel spans (logfire, pydantic-ai, MCP tools…) inside an ``@opik.track`` function.

The tracked function creates an Opik span but no OTel span, so the library's root OTel
span has no parent to inherit from. ``OpikSpanProcessor`` finds the innermost active
tracked span and attaches the library's subtree under it.

Run: ``python examples/library_spans_in_track.py``
"""

import sys

from opentelemetry.sdk.trace import TracerProvider

import opik_otel
from _common import opik_target, report


def library_call(tracer, prompt: str) -> str:  # type: ignore[no-untyped-def]
    """Stands in for a library that emits its own OTel spans, as pydantic-ai does."""
    with tracer.start_as_current_span("agent run", attributes={"gen_ai.prompt": prompt}):
        with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.request.model": "gpt-4o"}):
            return "Paris"


def main() -> int:
    with opik_target("opik-otel-library-spans") as local:
        import opik

        tracing = opik_otel.configure(tracer_provider=TracerProvider())
        tracer = tracing.tracer_provider.get_tracer("pydantic-ai-like")

        @opik.track(name="travel-assistant")
        def assistant(question: str) -> str:
            return library_call(tracer, question)

        print(f"answer: {assistant('capital of France?')}")
        opik.flush_tracker()
        tracing.force_flush()
        return report(local, expected_traces=1)


if __name__ == "__main__":
    sys.exit(main())
