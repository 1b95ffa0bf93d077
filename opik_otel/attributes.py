"""OTel span attribute keys that Opik's backend reads as its own ids (contract §3).

The same keys name the W3C baggage entries that carry Opik linkage between processes.
"""

OPIK_TRACE_ID = "opik.trace_id"
OPIK_SPAN_ID = "opik.span_id"
OPIK_PARENT_SPAN_ID = "opik.parent_span_id"

# Private marker on a local root span whose Opik trace id this process minted, so the
# exporter knows to create the trace row. Stripped before export: Opik stores any
# attribute it does not recognise as span input.
MINTED_TRACE = "opik_otel.minted_trace"

# Private attribute naming the Opik project of the trace a span belongs to, when it is
# not the exporter's configured one (``@opik.track(project_name=...)``, a caller's
# project, ``configure(project_name=...)``). The exporter routes each span to that
# project and strips the attribute, for the same reason as MINTED_TRACE.
PROJECT_NAME = "opik_otel.project_name"
