"""``OpikPropagator``: Opik's distributed-trace headers as an OpenTelemetry propagator.

Enable it with ``OTEL_PROPAGATORS=tracecontext,baggage,opik`` (or
``propagate.set_global_textmap``), and every instrumented HTTP client and server
carries Opik linkage with no code change:

- inject (client side): when the span making the call is in an Opik trace, writes
  ``opik_trace_id`` / ``opik_parent_span_id`` — the headers the Opik SDK reads — and
  by default also ``opik-trace-id`` / ``opik-parent-span-id``, which survive gunicorn
  and nginx (both silently drop header names containing underscores); plus
  ``opik_project_name`` / ``opik-project-name`` when the trace's project is known, so
  that an opik_otel callee writes to the caller's project (the Opik SDK ignores them);
- extract (server side): reads either spelling, with the rules of
  :func:`~opik_otel.extract_opik_distributed_trace_attributes`, into the returned
  context, where :class:`~opik_otel.OpikSpanProcessor` finds it and links the server
  span and, through it, all its descendants.

The extracted linkage lives under a private context key, not in the W3C baggage,
which the baggage propagator would forward to every downstream API. With
``baggage=True`` (entry point ``opik_baggage``) the linkage travels as baggage too.
Baggage that arrived with ``opik.*`` entries is always forwarded with them updated to
the calling span (list ``opik`` after ``baggage`` so its header is written last).
"""

from typing import Any, List, Optional, Set, Tuple

from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, get_current, set_value
from opentelemetry.propagators.textmap import (
    CarrierT,
    DefaultGetter,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from ._logging import get_logger
from .attributes import OPIK_SPAN_ID, OPIK_TRACE_ID
from .distributed_trace import (
    OPIK_PARENT_SPAN_ID_HEADER,
    OPIK_PARENT_SPAN_ID_HEADER_HYPHENATED,
    OPIK_TRACE_ID_HEADER,
    OPIK_TRACE_ID_HEADER_HYPHENATED,
    _header_items,
    _normalized_header_name,
    extract_opik_distributed_trace_attributes,
    with_linkage_baggage,
)
from .linkage import PROPAGATED_LINKAGE_KEY, Linkage, resolve_linkage
from .projects import (
    OPIK_PROJECT_NAME_HEADER,
    OPIK_PROJECT_NAME_HEADER_HYPHENATED,
)
from .trace_attributes import (
    TRACE_ATTRIBUTES_HEADER,
    TRACE_ATTRIBUTES_KEY,
    active_trace_attributes,
    trace_attributes_from_header,
)

LOGGER = get_logger(__name__)

# Normalized (lower-case, underscore) names: what _normalized_header_name() yields.
_OPIK_HEADER_NAMES = frozenset((OPIK_TRACE_ID_HEADER, OPIK_PARENT_SPAN_ID_HEADER, OPIK_PROJECT_NAME_HEADER))
# Spellings asked for one by one when a getter cannot list the carrier's keys.
_SPELLINGS = (
    OPIK_TRACE_ID_HEADER,
    OPIK_TRACE_ID_HEADER_HYPHENATED,
    OPIK_PARENT_SPAN_ID_HEADER,
    OPIK_PARENT_SPAN_ID_HEADER_HYPHENATED,
    OPIK_PROJECT_NAME_HEADER,
    OPIK_PROJECT_NAME_HEADER_HYPHENATED,
)
_BAGGAGE_HEADER = "baggage"
_TRACE_ATTRIBUTES_NAME = _normalized_header_name(TRACE_ATTRIBUTES_HEADER)
_W3C_BAGGAGE = W3CBaggagePropagator()


def _carrier_headers(carrier: Any, getter: Getter[Any]) -> Any:
    """The carrier's Opik headers in a shape the header reader accepts.

    The default getter reads plain mappings, which the reader takes as they are
    (and more: ``(name, value)`` pair lists, WSGI environs, bytes values). Any other
    getter knows its carrier best: its ``keys`` pick the Opik headers in any case and
    spelling, its ``get`` reads them; a getter that cannot list keys is asked for
    each spelling in turn.
    """
    if type(getter) is DefaultGetter:
        return carrier
    pairs: List[Tuple[str, Any]] = []
    try:
        keys = getter.keys(carrier)
    except Exception:
        keys = []
    for key in keys:
        if _normalized_header_name(key) in _OPIK_HEADER_NAMES:
            pairs.append((key, getter.get(carrier, key)))
    if not pairs:
        for name in _SPELLINGS:
            value = getter.get(carrier, name)
            if value:
                pairs.append((name, value))
    return pairs


class OpikPropagator(TextMapPropagator):
    """Carry Opik trace linkage in HTTP headers, in both directions.

    Args:
        hyphenated: also inject ``opik-trace-id`` / ``opik-parent-span-id``, which
            survive proxies and servers that drop header names with underscores.
            Extraction always reads both spellings.
        baggage: also carry the linkage as W3C baggage entries ``opik.trace_id`` /
            ``opik.span_id``: extract adds the incoming linkage to the context's
            baggage, and inject rewrites the ``baggage`` header with the calling
            span's linkage (keeping every other entry), so that services reading only
            baggage get the right parent. List it after ``baggage`` in
            ``OTEL_PROPAGATORS`` so that its header is the one written last.

    Never raises: a carrier or getter it cannot read leaves the context unchanged and
    logs a rate-limited warning.
    """

    def __init__(self, hyphenated: bool = True, baggage: bool = False) -> None:
        self._hyphenated = bool(hyphenated)
        self._baggage = bool(baggage)
        fields = {OPIK_TRACE_ID_HEADER, OPIK_PARENT_SPAN_ID_HEADER, OPIK_PROJECT_NAME_HEADER, TRACE_ATTRIBUTES_HEADER}
        if self._hyphenated:
            fields.update(
                (
                    OPIK_TRACE_ID_HEADER_HYPHENATED,
                    OPIK_PARENT_SPAN_ID_HEADER_HYPHENATED,
                    OPIK_PROJECT_NAME_HEADER_HYPHENATED,
                )
            )
        if self._baggage:
            fields.add(_BAGGAGE_HEADER)
        self._fields = frozenset(fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hyphenated={self._hyphenated}, baggage={self._baggage})"

    def extract(
        self,
        carrier: CarrierT,
        context: Optional[Context] = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Return ``context`` with the linkage the carrier's Opik headers name.

        Without usable Opik headers the result carries no extracted linkage (an
        earlier one in ``context`` is cleared: it named another request's parent).
        """
        if context is None:
            context = get_current()
        try:
            headers = _carrier_headers(carrier, getter)
        except Exception:
            LOGGER.warning(
                "Could not read Opik distributed trace headers from a %s carrier; "
                "the request is not linked to an Opik trace.",
                type(carrier).__name__,
                exc_info=True,
            )
            return context
        attributes = extract_opik_distributed_trace_attributes(headers)
        context = _with_propagated_trace_attributes(context, carrier, getter)
        try:
            if attributes is None:
                if context.get(PROPAGATED_LINKAGE_KEY) is not None:
                    return set_value(PROPAGATED_LINKAGE_KEY, None, context)
                return context
            linkage = Linkage(
                attributes.opik_trace_id, attributes.opik_parent_span_id, attributes.opik_project_name
            )
            result = set_value(PROPAGATED_LINKAGE_KEY, linkage, context)
            if self._baggage:
                result = with_linkage_baggage(result, linkage)
            return result
        except Exception:
            LOGGER.warning("Could not store Opik linkage in the context.", exc_info=True)
            return context

    def inject(
        self,
        carrier: CarrierT,
        context: Optional[Context] = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the Opik headers that make the callee join the caller's Opik trace.

        The linkage is the one a span starting in ``context`` would inherit: the
        current span's when it is in an Opik trace, else what was extracted from the
        incoming request, its baggage or the Opik SDK's ``@opik.track`` span. Nothing
        is written when there is none.
        """
        try:
            values = active_trace_attributes(context if context is not None else get_current())
            if values is not None and values.propagate:
                header = values.header_value()
                if header is not None:
                    setter.set(carrier, TRACE_ATTRIBUTES_HEADER, header)
            linkage = resolve_linkage(context)
            if linkage is None:
                return
            setter.set(carrier, OPIK_TRACE_ID_HEADER, linkage.trace_id)
            if self._hyphenated:
                setter.set(carrier, OPIK_TRACE_ID_HEADER_HYPHENATED, linkage.trace_id)
            if linkage.parent_span_id is not None:
                setter.set(carrier, OPIK_PARENT_SPAN_ID_HEADER, linkage.parent_span_id)
                if self._hyphenated:
                    setter.set(
                        carrier, OPIK_PARENT_SPAN_ID_HEADER_HYPHENATED, linkage.parent_span_id
                    )
            if linkage.project_name is not None:
                setter.set(carrier, OPIK_PROJECT_NAME_HEADER, linkage.project_name)
                if self._hyphenated:
                    setter.set(carrier, OPIK_PROJECT_NAME_HEADER_HYPHENATED, linkage.project_name)
            base = context if context is not None else get_current()
            # Baggage that already carries opik.* entries names the upstream span; left
            # as is, a downstream service reading only baggage would hang under it.
            if self._baggage or _has_opik_baggage(base):
                _W3C_BAGGAGE.inject(carrier, with_linkage_baggage(base, linkage), setter)
        except Exception:
            LOGGER.warning(
                "Could not write Opik distributed trace headers into a %s carrier.",
                type(carrier).__name__,
                exc_info=True,
            )

    @property
    def fields(self) -> Set[str]:
        """The header names :meth:`inject` may write."""
        return set(self._fields)


class OpikBaggagePropagator(OpikPropagator):
    """:class:`OpikPropagator` that also carries the linkage as W3C baggage.

    Registered as ``opik_baggage``: ``OTEL_PROPAGATORS=tracecontext,baggage,opik_baggage``.
    """

    def __init__(self, hyphenated: bool = True, baggage: bool = True) -> None:
        super().__init__(hyphenated=hyphenated, baggage=baggage)


def _with_propagated_trace_attributes(context: Context, carrier: Any, getter: Getter[Any]) -> Context:
    """``context`` with the ``trace_attributes(propagate=True)`` values an upstream
    opik_otel service sent, merged inside the ones already there."""
    try:
        if type(getter) is DefaultGetter:
            raw = next(
                (
                    item[1]
                    for item in _header_items(carrier)
                    if isinstance(item, (tuple, list))
                    and len(item) == 2
                    and _normalized_header_name(item[0]) == _TRACE_ATTRIBUTES_NAME
                ),
                None,
            )
        else:
            raw = getter.get(carrier, TRACE_ATTRIBUTES_HEADER)
        if isinstance(raw, (list, tuple)):
            raw = raw[0] if raw else None
        values = trace_attributes_from_header(raw)
        if values is None:
            return context
        outer = active_trace_attributes(context)
        return set_value(TRACE_ATTRIBUTES_KEY, values if outer is None else outer.merged(values), context)
    except Exception:
        LOGGER.warning("Could not read the '%s' header.", TRACE_ATTRIBUTES_HEADER, exc_info=True)
        return context


def _has_opik_baggage(context: Context) -> bool:
    entries = baggage.get_all(context)
    return OPIK_TRACE_ID in entries or OPIK_SPAN_ID in entries
