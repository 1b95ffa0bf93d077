"""Secrets never leave the process: default scrubbing plus your own ``mask``.

Values of credential keys (``Authorization``, cookies, API keys ...) are replaced by a
marker; ``mask`` sees every other value, on the export thread. Usage tokens are kept.

Run: ``python examples/masking.py``
"""

import re
import sys

import opik_otel
from _common import opik_target, report

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def hide_emails(key: str, value: object) -> object:
    return EMAIL.sub("<email>", value) if isinstance(value, str) else value


def main() -> int:
    with opik_target("opik-otel-masking") as local:
        tracing = opik_otel.configure(mask=hide_emails)
        tracer = tracing.tracer_provider.get_tracer("my-app")
        attributes = {
            "http.request.header.authorization": ("Bearer sk-live-secret",),
            "input.value": "Write to jane@example.com",
            "gen_ai.usage.input_tokens": 12,
        }
        with tracer.start_as_current_span("chat", attributes=attributes):
            pass
        tracing.force_flush()
        if local is not None:
            local.wait_for_spans(1)
            span = local.spans()[0]
            print(f"stored input: {span.input}, usage: {span.usage}")
        return report(local, expected_traces=1)


if __name__ == "__main__":
    sys.exit(main())
