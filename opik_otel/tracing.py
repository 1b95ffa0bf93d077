"""``configure()``: OTel tracing that lands in Opik, in one call."""

from typing import Any, Dict, Mapping, Optional, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from ._logging import get_logger
from .batching import (
    DEFAULT_EXIT_TIMEOUT_MILLIS,
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY_MILLIS,
    OpikBatchSpanProcessor,
    validate_batching_options,
)
from .errors import ConfigurationError
from .exporter import OpikExporter
from .filtering import SpanFilter, validated_span_filter
from .processor import OpikSpanProcessor
from .sampling import installed_sampler, validated_sample_rate

LOGGER = get_logger(__name__)


class OpikTracing:
    """What :func:`configure` set up: flush or shut it down, or reach its parts.

    Attributes:
        tracer_provider: the provider the pipeline is attached to.
        exporter: the :class:`~opik_otel.OpikExporter` (with ``OPIK_TRACK_DISABLE``
            one that drops everything).
        span_processor: the :class:`~opik_otel.batching.OpikBatchSpanProcessor`
            feeding it (with ``OPIK_TRACK_DISABLE`` one attached to nothing).
        linkage_processor: the :class:`~opik_otel.OpikSpanProcessor`, or ``None``
            when tracking is disabled.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        exporter: OpikExporter,
        span_processor: OpikBatchSpanProcessor,
        linkage_processor: Optional[OpikSpanProcessor] = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.exporter = exporter
        self.span_processor = span_processor
        self.linkage_processor = linkage_processor

    @property
    def stats(self) -> Dict[str, int]:
        """The batching processor's and the exporter's counters, in one mapping."""
        return {**self.span_processor.stats, **self.exporter.stats}

    def __repr__(self) -> str:
        return f"OpikTracing(exporter={self.exporter!r})"

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every finished span now and wait until Opik accepted it (and what
        earlier runs left queued), at most ``timeout_millis`` in all.

        Returns ``False`` when time ran out (for instance while Opik is down: the spans
        then wait in the queue, and are delivered once Opik answers).
        """
        try:
            return self.span_processor.force_flush(timeout_millis)
        except Exception:
            LOGGER.warning("Flushing spans to Opik failed.", exc_info=True)
            return False

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Export what is queued, then stop, within ``timeout_millis``; spans that
        could not be sent stay spooled on disk for the next run."""
        if self.linkage_processor is not None:
            # No exporter will write the rows of traces minted from now on.
            self.linkage_processor.shutdown()
        try:
            self.span_processor.shutdown(timeout_millis)
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
    span_filter: "SpanFilter" = None,
    sample_rate: Optional[float] = None,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    schedule_delay_millis: float = DEFAULT_SCHEDULE_DELAY_MILLIS,
    max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
    exit_timeout_millis: float = DEFAULT_EXIT_TIMEOUT_MILLIS,
    **exporter_options: Any,
) -> OpikTracing:
    """Set up OTel tracing that lands in Opik: linkage processor plus batched export.

    Attaches to ``tracer_provider``, else to the globally registered SDK
    ``TracerProvider``, else creates one and registers it globally. Every local root
    span gets an Opik trace id at start (``mint_root_ids``), so
    ``get_distributed_trace_headers()`` and ``get_opik_trace_id()`` work in OTel-first
    services, and the exporter creates those traces' rows.

    Spans are batched by :class:`~opik_otel.batching.OpikBatchSpanProcessor`: the
    application's threads only append to a bounded queue (``max_queue_size``; a full
    queue drops new spans, counted and logged once a minute); a background thread
    exports every ``schedule_delay_millis`` in batches of ``max_export_batch_size``.
    At interpreter exit (and at the end of a ``multiprocessing`` child) the queue is
    flushed for at most ``exit_timeout_millis``; what Opik cannot take then waits in
    the spool for the next run.

    Settings follow the Opik SDK (arguments > ``OPIK_*`` env > ``~/.opik.config``);
    ``otlp_endpoint`` sends spans through an OTLP/HTTP endpoint such as an
    OpenTelemetry Collector while trace rows still go to Opik. Other keyword
    arguments go to :class:`~opik_otel.OpikExporter` (``mask=``, ``scrub=`` among them).

    ``span_filter`` (``None``, ``"llm"`` or ``(span) -> bool``) and ``sample_rate``
    (0..1, per trace, local roots only) decide what reaches Opik; see
    :class:`~opik_otel.OpikSpanProcessor`.

    Raises:
        ConfigurationError: the settings cannot work; the message says what to fix.
    """
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise ConfigurationError(
            f"tracer_provider must be an opentelemetry.sdk.trace.TracerProvider, not {type(tracer_provider).__name__}."
        )
    validate_batching_options(max_queue_size, schedule_delay_millis, max_export_batch_size, exit_timeout_millis)
    # Checked before anything starts.
    validated_span_filter(span_filter)
    validated_sample_rate(sample_rate)
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

    def batching() -> OpikBatchSpanProcessor:
        return OpikBatchSpanProcessor(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
            exit_timeout_millis=exit_timeout_millis,
        )

    if exporter.config.track_disable:
        LOGGER.info("OPIK_TRACK_DISABLE is set: spans are not sent to Opik.")
        # Working parts attached to nothing: the documented attributes keep working.
        return OpikTracing(provider, exporter, batching())
    existing = _existing_pipeline(provider)
    if existing is not None:
        exporter.shutdown(0)
        LOGGER.warning(
            "configure() was already called for this TracerProvider: the first pipeline is reused and "
            "the settings of this call are ignored (shut the first one down to configure anew)."
        )
        return existing

    linkage = OpikSpanProcessor(
        mint_root_ids=mint_root_ids, exporter=exporter, span_filter=span_filter, sample_rate=sample_rate
    )
    # Sampled-out traces cost least when their spans are never recorded: only a
    # sampler can do that (the processor still marks them for tracers made earlier).
    provider.sampler = installed_sampler(provider.sampler, validated_sample_rate(sample_rate))
    provider.add_span_processor(linkage)
    batch = batching()
    provider.add_span_processor(batch)
    # The processor flushes at exit (bounded by exit_timeout_millis) by itself.
    return OpikTracing(provider, exporter, batch, linkage)


def _existing_pipeline(provider: TracerProvider) -> Optional[OpikTracing]:
    """The live pipeline an earlier configure() attached to ``provider``, if any."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    linkage = None
    for processor in processors:
        if isinstance(processor, OpikSpanProcessor):
            linkage = processor
        if (
            isinstance(processor, OpikBatchSpanProcessor)
            and isinstance(processor.span_exporter, OpikExporter)
            and not processor.is_shut_down
        ):
            return OpikTracing(provider, processor.span_exporter, processor, linkage)
    return None


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
