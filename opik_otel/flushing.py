"""Making ``provider.force_flush()`` mean "delivered" with the SDK's own processors.

The SDK's ``BatchSpanProcessor.force_flush`` (1.45) hands what it holds to
``exporter.export()`` on the caller's thread and returns ``True`` without asking the
exporter anything; with nothing queued it does not call the exporter at all. Two
pieces close the gap:

- :func:`flush_timeout_of_caller` lets ``export()`` see that it runs inside such a
  flush, so it waits for delivery before it returns;
- :class:`DeliveryFlushProcessor`, added to the provider after the batch processor,
  waits for the exporter's delivery in ``force_flush`` and so makes the provider's
  flush return ``False`` while Opik does not take the data. The exporter adds it to
  the global provider by itself at its first export; ``opentelemetry-instrument`` adds
  it when it starts; for a provider of your own call :func:`add_delivery_flush`.
"""

import sys
from typing import Any, Optional

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

# How far up the stack export() looks for the SDK's force_flush (processor, multi
# processor, provider: a few frames).
_FRAMES = 8


def flush_timeout_of_caller() -> Optional[float]:
    """The timeout (ms) of an OpenTelemetry SDK ``force_flush`` that called the current
    ``export()``, or ``None`` when no flush is on the way (a batch processor's worker)."""
    frame: Any = sys._getframe(2)
    for _ in range(_FRAMES):
        if frame is None:
            return None
        if frame.f_code.co_name == "force_flush" and str(frame.f_globals.get("__name__", "")).startswith(
            "opentelemetry.sdk"
        ):
            timeout = frame.f_locals.get("timeout_millis")
            if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout >= 0:
                return float(timeout)
            return 30000.0
        frame = frame.f_back
    return None


class DeliveryFlushProcessor(SpanProcessor):
    """A span processor whose ``force_flush`` waits until ``exporter`` delivered what it
    was handed; add it to the provider after the processor that feeds the exporter.

    It sees no spans and shuts nothing down (the batch processor shuts its exporter).
    """

    def __init__(self, exporter: Any) -> None:
        self.exporter = exporter

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.exporter.force_flush(timeout_millis))
        except Exception:
            return False


def add_delivery_flush(provider: Any = None) -> int:
    """Add a :class:`DeliveryFlushProcessor` after every SDK ``BatchSpanProcessor`` of
    ``provider`` (default: the global one) that feeds an ``OpikExporter``, so that
    ``provider.force_flush()`` returns ``True`` only once Opik accepted the data.
    Returns how many were added; never raises."""
    from opentelemetry import trace

    from .zero_code_exporter import opik_exporter_behind

    try:
        if provider is None:
            provider = trace.get_tracer_provider()
        processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
        waiting = {id(p.exporter) for p in processors if isinstance(p, DeliveryFlushProcessor)}
        added = 0
        for processor in processors:
            exporter = opik_exporter_behind(getattr(getattr(processor, "_batch_processor", None), "_exporter", None))
            if exporter is not None and id(exporter) not in waiting:
                provider.add_span_processor(DeliveryFlushProcessor(exporter))
                waiting.add(id(exporter))
                added += 1
        return added
    except Exception:
        return 0
