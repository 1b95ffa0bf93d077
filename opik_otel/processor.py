"""``OpikSpanProcessor``: carries Opik trace linkage down an OTel subtree.

``attach_to_parent`` (or the ``opik`` propagator, or an upstream service's baggage)
puts Opik ids on a boundary span only. The backend reads ``opik.*`` attributes span
by span, so without this processor every descendant of that boundary would land in a
trace Opik derives on its own, apart from its parent. On each span start the
processor finds the linkage the new span inherits (see
:func:`opik_otel.linkage.resolve_linkage`) and stamps the span with the trace id, a
fresh ``opik.span_id`` and its parent's Opik id.
"""

import sys
from typing import TYPE_CHECKING, Any, Dict, Optional

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._logging import get_logger
from .attributes import MINTED_TRACE, OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from .ids import IdGenerator
from .linkage import is_local_root, opik_span_stack, resolve_linkage
from .trace_attributes import TRACE_ATTRIBUTES_KEY

if TYPE_CHECKING:
    from .filtering import SpanFilter

LOGGER = get_logger(__name__)

_CANONICAL_ID_LENGTH = 36


def minted_root_attributes(span: Span, ids: IdGenerator) -> Dict[str, Any]:
    """Opik ids for a new trace rooted at ``span``, marked for trace-row creation."""
    start_ms = (span.start_time or 0) // 1_000_000 or None
    return {OPIK_TRACE_ID: ids.new_id(start_ms), OPIK_SPAN_ID: ids.new_id(start_ms), MINTED_TRACE: True}


def set_linkage_attributes(span: Span, attributes: Dict[str, Any]) -> None:
    """Set Opik id attributes on a span that is starting.

    ``Span.set_attributes`` re-validates every value and costs as much as a third of
    a bare span's whole life; these values are canonical id strings (and one bool), so when the
    span's attribute store is the SDK's own and has room within its limits they go
    straight into it under the span's lock. Anything else takes the public path.
    """
    store = getattr(span, "_attributes", None)
    if (
        type(store) is BoundedAttributes
        and not store._immutable
        and (store.maxlen is None or len(store._dict) + len(attributes) <= store.maxlen)
        and (store.max_value_len is None or store.max_value_len >= _CANONICAL_ID_LENGTH)
    ):
        with span._lock:
            if span._end_time is None:
                store._dict.update(attributes)
                return
    span.set_attributes(attributes)


class OpikSpanProcessor(SpanProcessor):
    """Stamp every span of an Opik subtree with ``opik.*`` ids as it starts.

    Register it on the same ``TracerProvider`` as the exporting processor; the order
    does not matter. It keeps no per-span state, so one instance serves any number of
    threads and asyncio tasks.

    Args:
        mint_root_ids: also give every local root span (no parent at all, no inherited
            linkage) a fresh Opik trace id and span id, so an OTel-first service can
            hand its trace to downstream services. The trace row must then be created
            by ``OpikExporter``, which ``opik_otel.configure`` sets up for you.
        span_filter: which spans reach Opik: ``None`` (all), ``"llm"`` (LLM spans,
            spans linked from Opik and local roots) or a callable ``(span) -> bool``
            called as each span starts. A dropped span's kept descendants chain to its
            nearest kept ancestor; its trace row is still written. Needs
            ``OpikExporter`` (which leaves dropped spans out) and mints root ids.
        sample_rate: fraction (0..1) of local roots whose traces are kept, decided
            per trace id; spans linked to an Opik trace from upstream are always kept.
            ``configure()`` passes its own ``sample_rate`` here.
    """

    def __init__(
        self, mint_root_ids: bool = False, span_filter: "SpanFilter" = None, sample_rate: Optional[float] = None
    ) -> None:
        self._mint_root_ids = mint_root_ids
        self._ids = IdGenerator()
        # Found once the application imports opik; spans outside any tracked function
        # then cost one read of it instead of a walk through the SDK's modules.
        self._opik_spans: Any = None
        self._shaper: Any = None
        if span_filter is not None or sample_rate is not None:
            # Imported here: shaping builds on this module's helpers.
            from .filtering import validated_span_filter
            from .sampling import validated_sample_rate
            from .shaping import SpanShaper

            span_filter = validated_span_filter(span_filter)
            rate = validated_sample_rate(sample_rate)
            if span_filter is not None or rate is not None:
                self._shaper = SpanShaper(span_filter, rate, mint_root_ids, self._ids)
                # An instance attribute: the unshaped path below pays nothing for it.
                self.on_start = self._shaped_on_start  # type: ignore[method-assign]

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        try:
            opik_spans = self._opik_spans
            if opik_spans is None and "opik.context_storage" in sys.modules:
                opik_spans = self._opik_spans = opik_span_stack()
            linkage = resolve_linkage(parent_context, opik_spans)
            if linkage is None:
                if self._mint_root_ids:
                    context = get_current() if parent_context is None else parent_context
                    if is_local_root(context):
                        attributes = minted_root_attributes(span, self._ids)
                        values: Any = context.get(TRACE_ATTRIBUTES_KEY)
                        if values is not None:
                            attributes.update(values.span_attributes)
                        set_linkage_attributes(span, attributes)
                return
            start_ns = span.start_time
            attributes = {
                OPIK_TRACE_ID: linkage.trace_id,
                OPIK_SPAN_ID: self._ids.new_id(start_ns // 1_000_000 if start_ns else None),
            }
            if linkage.parent_span_id is not None:
                attributes[OPIK_PARENT_SPAN_ID] = linkage.parent_span_id
            set_linkage_attributes(span, attributes)
        except Exception:  # a telemetry hook must never break the traced code
            LOGGER.warning("Could not apply Opik linkage to a span.", exc_info=True)

    def _shaped_on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        """``on_start`` when ``span_filter`` or ``sample_rate`` is set."""
        try:
            self._shaper.on_start(span, parent_context)
        except Exception:  # a telemetry hook must never break the traced code
            LOGGER.warning("Could not apply Opik linkage to a span.", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        """Stop minting trace ids: no exporter would write their trace rows any more.

        Linkage inherited from parents, headers, baggage or ``@opik.track`` still
        applies, so spans started later stay in their traces.
        """
        self._mint_root_ids = False
        if self._shaper is not None:
            self._shaper.stop_minting()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
