"""opik_otel: make OpenTelemetry-instrumented applications first-class citizens of Opik.

Server side, join the Opik trace a request names::

    from opik_otel import OpikSpanProcessor, attach_to_parent
    provider.add_span_processor(OpikSpanProcessor())
    with tracer.start_as_current_span("handle") as span:
        attach_to_parent(span, request.headers)

Client side, pass the current trace on::

    headers.update(opik_otel.get_distributed_trace_headers() or {})
"""

from .attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from .auto import register_span_processor
from .batching import OpikBatchSpanProcessor
from .config import OpikConfig, resolve_config
from .distributed_trace import (
    attach_to_parent,
    context_with_opik_baggage,
    extract_opik_distributed_trace_attributes,
    get_distributed_trace_headers,
    get_opik_trace_id,
)
from .errors import ConfigurationError
from .exporter import OpikExporter
from .flushing import add_delivery_flush
from .ids import generate_id, is_valid_uuid_v7
from .processor import OpikSpanProcessor
from .retry import RetryPolicy
from .propagator import OpikBaggagePropagator, OpikPropagator
from .trace_attributes import trace_attributes
from .tracing import OpikTracing, configure
from .types import OpikDistributedTraceAttributes

__all__ = [
    "OPIK_PARENT_SPAN_ID",
    "OPIK_SPAN_ID",
    "OPIK_TRACE_ID",
    "ConfigurationError",
    "OpikBaggagePropagator",
    "OpikBatchSpanProcessor",
    "OpikConfig",
    "OpikDistributedTraceAttributes",
    "OpikExporter",
    "OpikPropagator",
    "OpikSpanProcessor",
    "OpikTracing",
    "RetryPolicy",
    "add_delivery_flush",
    "attach_to_parent",
    "configure",
    "context_with_opik_baggage",
    "extract_opik_distributed_trace_attributes",
    "generate_id",
    "get_distributed_trace_headers",
    "get_opik_trace_id",
    "is_valid_uuid_v7",
    "register_span_processor",
    "resolve_config",
    "trace_attributes",
]
