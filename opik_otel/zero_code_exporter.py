"""The exporter ``OTEL_TRACES_EXPORTER=opik`` names.

The SDK's configurator (``opentelemetry-distro``'s, a vendor's, or the one
:func:`opik_otel.auto.pre_instrument` runs) builds it with no arguments, from the Opik
settings. An exception from that constructor ends ``opentelemetry-instrument``'s whole
set-up: no library is instrumented and the other exporters of ``OTEL_TRACES_EXPORTER``
are lost with it. So the entry point is :class:`ZeroCodeOpikExporter`: a setting the
user must fix (Opik Cloud without an API key, a malformed URL) becomes one line saying
what to do, and the application runs instrumented, its spans not sent to Opik.
"""

from typing import Any, Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._logging import get_logger
from .errors import ConfigurationError
from .exporter import OpikExporter

LOGGER = get_logger(__name__)


class ZeroCodeOpikExporter(SpanExporter):
    """An :class:`OpikExporter` built from the Opik settings; when they cannot be used,
    one warning and a stand-in whose ``export`` answers ``FAILURE``. Never raises.

    Args:
        options: passed to :class:`OpikExporter` (the SDK passes none).
    """

    def __init__(self, **options: Any) -> None:
        self.opik_exporter: Optional[OpikExporter] = None
        try:
            self.opik_exporter = OpikExporter(**options)
        except ConfigurationError as error:
            # The message says what to set; a traceback would only bury it.
            LOGGER.warning("Spans are not exported to Opik: %s", error)
        except Exception:
            LOGGER.warning("Could not start the Opik exporter; spans are not exported to Opik.", exc_info=True)

    def __repr__(self) -> str:
        return f"ZeroCodeOpikExporter({self.opik_exporter!r})"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """:meth:`OpikExporter.export`, or ``FAILURE`` when there is no exporter."""
        if self.opik_exporter is None:
            return SpanExportResult.FAILURE
        return self.opik_exporter.export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """:meth:`OpikExporter.force_flush`, or ``False`` when there is no exporter."""
        return self.opik_exporter is not None and self.opik_exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """:meth:`OpikExporter.shutdown`."""
        if self.opik_exporter is not None:
            self.opik_exporter.shutdown()


def opik_exporter_behind(exporter: Any) -> Optional[OpikExporter]:
    """``exporter`` itself when it is an :class:`OpikExporter`, the one a
    :class:`ZeroCodeOpikExporter` holds, else ``None``."""
    if isinstance(exporter, ZeroCodeOpikExporter):
        return exporter.opik_exporter
    return exporter if isinstance(exporter, OpikExporter) else None
