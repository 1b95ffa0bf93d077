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

# Private marker on a span that ``span_filter`` or ``sample_rate`` left out of the export.
# Its ``opik.span_id`` is then its nearest kept ancestor's, so that its descendants and
# the distributed-trace helpers chain past it. The exporter drops such spans (writing the
# trace row if the span was a minted root).
DROPPED_SPAN = "opik_otel.dropped"

# Private marker on a sampled-out local root and its descendants; like DROPPED_SPAN,
# but ``attach_to_parent`` linking the root to an upstream trace cancels it.
SAMPLED_OUT = "opik_otel.sampled_out"

# Private attribute on a local root started inside ``trace_attributes(...)``: the
# trace-level fields (JSON object) the exporter writes on the root span and trace row.
TRACE_ATTRIBUTES = "opik_otel.trace_attributes"

# Private attribute naming the Opik project of the trace a span belongs to, when it is
# not the exporter's configured one (``@opik.track(project_name=...)``, a caller's
# project, ``configure(project_name=...)``, ``trace_attributes(project_name=...)``). The
# exporter routes each span to that project and strips the attribute, for the same
# reason as MINTED_TRACE.
PROJECT_NAME = "opik_otel.project_name"
