"""opik_otel: make OpenTelemetry-instrumented applications first-class citizens of Opik."""
