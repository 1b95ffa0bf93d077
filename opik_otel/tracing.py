"""``configure()``: OTel tracing that lands in Opik, in one call."""

import atexit
import weakref
from typing import Any, Mapping, Optional, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ._logging import get_logger
from .exporter import OpikExporter
from .processor import OpikSpanProcessor

LOGGER = get_logger(__name__)


class OpikTracing:
    """What :func:`configure` set up: flush or shut it down, or reach its parts."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        exporter: Optional[OpikExporter],
        span_processor: Optional[BatchSpanProcessor],
    ) -> None:
        self.tracer_provider = tracer_provider
        self.exporter = exporter
        self.span_processor = span_processor

    def __repr__(self) -> str:
        return f"OpikTracing(exporter={self.exporter!r})"

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every finished span now and wait for delivery (or the spool)."""
        if self.span_processor is None or self.exporter is None:
            return True
        try:
            return bool(self.span_processor.force_flush(timeout_millis)) and self.exporter.force_flush(timeout_millis)
        except Exception:
            LOGGER.warning("Flushing spans to Opik failed.", exc_info=True)
            return False

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Flush, then stop exporting; spans that could not be sent stay spooled on disk."""
        if self.span_processor is None:
            return
        try:
            self.span_processor.shutdown()
        except Exception:
            LOGGER.warning("Shutting down the Opik exporter failed.", exc_info=True)


def configure(
    url: Optional[str] = None,
    api_key: Optional[str] = None,
    workspace: Optional[str] = None,
    project_name: Optional[str] = None,
    *,
    tags: Optional[Sequence[str]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    thread_id: Optional[str] = None,
    otlp_endpoint: Optional[str] = None,
    tracer_provider: Optional[TracerProvider] = None,
    mint_root_ids: bool = True,
    max_queue_size: int = 2048,
    schedule_delay_millis: float = 1000,
    max_export_batch_size: int = 512,
    **exporter_options: Any,
) -> OpikTracing:
    """Set up OTel tracing that lands in Opik: linkage processor plus batched export.

    Attaches to ``tracer_provider``, else to the globally registered SDK
    ``TracerProvider``, else creates one and registers it globally. Every local root
    span gets an Opik trace id at start (``mint_root_ids``), so
    ``get_distributed_trace_headers()`` and ``get_opik_trace_id()`` work in OTel-first
    services, and the exporter creates those traces' rows. Spans are flushed at exit.

    Settings follow the Opik SDK (arguments > ``OPIK_*`` env > ``~/.opik.config``);
    ``otlp_endpoint`` sends spans through an OTLP/HTTP endpoint such as an
    OpenTelemetry Collector while trace rows still go to Opik. Other keyword
    arguments go to :class:`~opik_otel.OpikExporter`.

    Raises:
        ConfigurationError: the settings cannot work; the message says what to fix.
    """
    exporter = OpikExporter(
        url,
        api_key,
        workspace,
        project_name,
        tags=tags,
        metadata=metadata,
        thread_id=thread_id,
        otlp_endpoint=otlp_endpoint,
        **exporter_options,
    )
    provider = tracer_provider or _global_sdk_provider()
    if exporter.config.track_disable:
        LOGGER.info("OPIK_TRACK_DISABLE is set: spans are not sent to Opik.")
        exporter.shutdown(0)
        return OpikTracing(provider, None, None)

    provider.add_span_processor(OpikSpanProcessor(mint_root_ids=mint_root_ids))
    batch = BatchSpanProcessor(
        exporter,
        max_queue_size=max_queue_size,
        schedule_delay_millis=schedule_delay_millis,
        max_export_batch_size=max_export_batch_size,
    )
    provider.add_span_processor(batch)
    tracing = OpikTracing(provider, exporter, batch)
    atexit.register(_flush_at_exit, weakref.ref(tracing))
    return tracing


def _global_sdk_provider() -> TracerProvider:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:  # someone else's non-SDK provider won the race
        LOGGER.warning(
            "A non-SDK tracer provider is registered globally; opik_otel uses its own. "
            "Pass tracer_provider= to configure() to choose."
        )
    return provider


def _flush_at_exit(reference: "weakref.ref[OpikTracing]") -> None:
    tracing = reference()
    if tracing is not None:
        tracing.force_flush(timeout_millis=5000)
