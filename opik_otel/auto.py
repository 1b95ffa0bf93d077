"""Zero-code mode: ``opentelemetry-instrument`` registers ``OpikSpanProcessor`` too.

An application run as::

    OTEL_TRACES_EXPORTER=opik OTEL_PROPAGATORS=tracecontext,baggage,opik \\
    OPIK_PROJECT_NAME=... opentelemetry-instrument python app.py

is configured by OpenTelemetry's own machinery: a *configurator* (from
``opentelemetry-distro`` or a vendor distro, if one is installed) builds the SDK
``TracerProvider`` from the ``OTEL_*`` variables, then the instrumentors load. None of
that knows about ``OpikSpanProcessor``, which must be on the provider for linked spans'
descendants to stay in their Opik trace.

opik_otel hooks in through the ``opentelemetry_pre_instrument`` entry point, which
``opentelemetry-instrument`` calls after the configurator has run and before any
library is instrumented, whichever configurator that was:

- a configurator set up the SDK (``opentelemetry-distro`` or a vendor's): the hook adds
  ``OpikSpanProcessor`` to the global ``TracerProvider`` it made;
- no configurator is installed (plain ``opentelemetry-instrumentation``, where
  ``OTEL_*`` variables would otherwise be ignored) and ``OTEL_TRACES_EXPORTER`` is set:
  the hook runs :class:`OpikConfigurator`, the SDK's standard set-up, then adds the
  processor.

opik_otel deliberately registers no ``opentelemetry_configurator`` of its own: only
one configurator runs, picked by installation order unless ``OTEL_PYTHON_CONFIGURATOR``
names one, so a second one would randomly displace the distro's.
"""

import os
from typing import Any, Optional

from opentelemetry import trace
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace import TracerProvider

from ._logging import get_logger
from .exporter import OpikExporter
from .flushing import add_delivery_flush
from .processor import OpikSpanProcessor
from .zero_code_exporter import opik_exporter_behind

LOGGER = get_logger(__name__)

_OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"


def has_opik_span_processor(provider: Any) -> bool:
    """Tell whether an SDK ``TracerProvider`` already runs an ``OpikSpanProcessor``."""
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", ())
    return any(isinstance(p, OpikSpanProcessor) for p in processors)


def find_opik_exporter(provider: Any) -> Optional[OpikExporter]:
    """The ``OpikExporter`` behind one of the provider's span processors, if any.

    The SDK's ``SimpleSpanProcessor`` and ``OpikBatchSpanProcessor`` expose it as
    ``span_exporter``; the SDK's ``BatchSpanProcessor`` (what ``OTEL_TRACES_EXPORTER=opik``
    builds) keeps it in its inner batch processor.
    """
    active = getattr(provider, "_active_span_processor", None)
    for processor in getattr(active, "_span_processors", ()):
        exporter = getattr(processor, "span_exporter", None)
        if exporter is None:
            exporter = getattr(getattr(processor, "_batch_processor", None), "_exporter", None)
        found = opik_exporter_behind(exporter)
        if found is not None:
            return found
    return None


def register_span_processor(provider: Optional[Any] = None) -> bool:
    """Add an ``OpikSpanProcessor`` to ``provider`` unless it already has one.

    When the provider exports to an ``OpikExporter`` (``OTEL_TRACES_EXPORTER=opik``),
    the processor is wired to it as ``configure()`` does: local roots get Opik ids
    and their trace rows, so downstream services join the trace.

    Args:
        provider: an SDK ``TracerProvider``; defaults to the global one.

    Returns:
        ``True`` when the provider runs an ``OpikSpanProcessor`` afterwards, ``False``
        when there is no SDK provider to add it to. Never raises.
    """
    try:
        if provider is None:
            provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            return False
        if not has_opik_span_processor(provider):
            provider.add_span_processor(OpikSpanProcessor(exporter=find_opik_exporter(provider)))
        return True
    except Exception:
        LOGGER.warning("Could not register OpikSpanProcessor.", exc_info=True)
        return False


class OpikConfigurator(_OTelSDKConfigurator):
    """The SDK's standard configurator from ``OTEL_*`` variables, plus the processor.

    Not registered as an entry point (see the module docs); distro authors may
    subclass or register it, and :func:`pre_instrument` runs it when no configurator
    is installed.
    """

    def _configure(self, **kwargs: Any) -> None:
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]  # the SDK's is untyped
        register_span_processor()


def _auto_instrumentation_version() -> Optional[str]:
    try:
        from opentelemetry.instrumentation.version import __version__
    except Exception:
        return None
    return str(__version__)


def pre_instrument() -> None:
    """``opentelemetry_pre_instrument`` hook: make sure ``OpikSpanProcessor`` runs.

    Never raises: an exception here would stop ``opentelemetry-instrument`` from
    instrumenting anything.
    """
    try:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            if not os.environ.get(_OTEL_TRACES_EXPORTER, "").strip():
                LOGGER.debug(
                    "No OpenTelemetry SDK configured and %s unset: OpikSpanProcessor "
                    "is left to the application's own set-up.",
                    _OTEL_TRACES_EXPORTER,
                )
                return
            try:
                OpikConfigurator().configure(  # type: ignore[no-untyped-call]
                    auto_instrumentation_version=_auto_instrumentation_version()
                )
            except Exception:
                # It may have failed after setting the provider (an exporter that
                # cannot start): the processor still goes on whatever provider is there.
                LOGGER.warning(
                    "Could not configure the OpenTelemetry SDK from the OTEL_* variables.",
                    exc_info=True,
                )
            provider = trace.get_tracer_provider()
        # The SDK's BatchSpanProcessor(OpikExporter()) that OTEL_TRACES_EXPORTER=opik
        # builds: make provider.force_flush() wait for delivery.
        add_delivery_flush(provider)
        if not register_span_processor(provider):
            LOGGER.warning(
                "The global TracerProvider is a %s, not the OpenTelemetry SDK's; "
                "OpikSpanProcessor was not registered.",
                type(provider).__name__,
            )
    except Exception:
        LOGGER.warning(
            "Could not set up OpenTelemetry for Opik; spans may not be linked or exported.",
            exc_info=True,
        )
