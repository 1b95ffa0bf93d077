"""Reading the Opik linkage an OTel span, a context's baggage or the Opik SDK carries.

These functions run inside ``SpanProcessor.on_start`` for every span, so they avoid
work on the common path (a span with no Opik linkage anywhere) and never raise.
"""

import sys
from contextvars import ContextVar
from typing import Any, Callable, Mapping, NamedTuple, Optional, cast

import opentelemetry.context
from opentelemetry.context import Context, create_key, get_current
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import Span

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.util import BoundedList

# The keys behind get_current_span() and baggage.get_all(), private but stable since
# API 1.0: on_start runs for every span, and reading the context dict directly saves
# two context lookups and a mapping proxy per span (tests pin them to the public API).
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.trace.propagation import _SPAN_KEY

from ._logging import get_logger
from .attributes import DROPPED_SPAN, OPIK_SPAN_ID, OPIK_TRACE_ID, PROJECT_NAME
from .ids import canonical_uuid_v7
from .projects import OPIK_PROJECT_NAME_BAGGAGE, usable_project_name

LOGGER = get_logger(__name__)

_EMPTY: Mapping[str, Any] = {}

# Context key under which ``OpikPropagator.extract`` stores the :class:`Linkage` an
# incoming request's Opik headers name. Kept out of W3C baggage so it never travels on
# to third-party services; defined here so this module need not import the propagator.
PROPAGATED_LINKAGE_KEY = create_key("opik-propagated-linkage")


class Linkage(NamedTuple):
    """Where a new span belongs in Opik: its trace, the Opik id of its parent span, and
    the trace's project (``None``: the exporter's configured project)."""

    trace_id: str
    parent_span_id: Optional[str]
    project_name: Optional[str] = None


def span_attributes(span: Any) -> Mapping[str, Any]:
    """Return a span's attributes without copying, or an empty mapping.

    The SDK span keeps them in a ``BoundedAttributes`` whose ``get`` goes through
    ``Mapping.get`` and so raises and catches ``KeyError`` on every miss; reading its
    plain dict directly keeps the common miss on the hot path cheap.
    """
    store = getattr(span, "_attributes", None)
    if type(store) is BoundedAttributes:
        return store._dict
    attributes = getattr(span, "attributes", None)
    return attributes if isinstance(attributes, Mapping) else _EMPTY


def may_hold_items(store: Any) -> bool:
    """Whether a span's private events or links store (``getattr(span, "_events", True)``)
    may hold any. Most spans have none, and asking is on the export path of every span:
    the SDK's ``BoundedList`` is asked through its deque (its ``__len__`` is a Python
    call, and the public accessors copy)."""
    return bool(store._dq if type(store) is BoundedList else store)  # type: ignore[attr-defined]


def span_linkage(span: Any) -> Optional[Linkage]:
    """Return the (trace id, span id) pair a span carries, when both are valid.

    The pair is returned as a :class:`Linkage` whose ``parent_span_id`` is the span's
    own Opik id, i.e. what a child of this span takes as its parent.
    """
    attributes = span_attributes(span)
    trace_id = canonical_uuid_v7(attributes.get(OPIK_TRACE_ID))
    span_id = canonical_uuid_v7(attributes.get(OPIK_SPAN_ID))
    if trace_id is None:
        return None
    if span_id is None:
        # Inside a dropped root, downstream work joins the trace at its top.
        if attributes.get(DROPPED_SPAN) is True:
            return Linkage(trace_id, None, _attribute_project(attributes))
        return None
    return Linkage(trace_id, span_id, _attribute_project(attributes))


def _attribute_project(attributes: Mapping[str, Any]) -> Optional[str]:
    # Only this package writes the attribute, from a name it has checked; checking it
    # again on every span start would cost per character. The exporter checks it once.
    value = attributes.get(PROJECT_NAME)
    return value if type(value) is str else None


def parent_span_linkage(attributes: Mapping[str, Any]) -> Optional[Linkage]:
    """Linkage a child inherits from its parent span's attributes.

    The parent must carry both a valid ``opik.trace_id`` and ``opik.span_id``; a partial
    or invalid pair gives ``None`` and a warning.
    """
    raw_trace_id = attributes.get(OPIK_TRACE_ID)
    raw_span_id = attributes.get(OPIK_SPAN_ID)
    trace_id = canonical_uuid_v7(raw_trace_id)
    span_id = canonical_uuid_v7(raw_span_id)
    if trace_id is not None and span_id is not None:
        return Linkage(trace_id, span_id, _attribute_project(attributes))
    if trace_id is not None and raw_span_id is None and attributes.get(DROPPED_SPAN) is True:
        # A root that span_filter dropped: its kept children are top-level in its trace.
        return Linkage(trace_id, None, _attribute_project(attributes))
    bad_key, bad_value = (
        (OPIK_TRACE_ID, raw_trace_id) if trace_id is None else (OPIK_SPAN_ID, raw_span_id)
    )
    LOGGER.warning(
        "Parent span attribute '%s' is missing or not a UUIDv7 (%.60r); "
        "leaving the new span outside any Opik trace.",
        bad_key,
        bad_value,
    )
    return None


def baggage_linkage(entries: Mapping[str, Any]) -> Optional[Linkage]:
    """Linkage from the W3C baggage entries ``opik.trace_id`` / ``opik.span_id``.

    A trace id without a span id places the span at the top of that trace, as the
    header rules do; a span id without a trace id, or an invalid id, gives ``None``
    and a warning.
    """
    raw_trace_id = entries.get(OPIK_TRACE_ID)
    raw_span_id = entries.get(OPIK_SPAN_ID)
    trace_id = canonical_uuid_v7(raw_trace_id)
    project = usable_project_name(entries.get(OPIK_PROJECT_NAME_BAGGAGE))
    if trace_id is None:
        LOGGER.warning(
            "Baggage entry '%s' is missing or not a UUIDv7 (%.60r); "
            "leaving the span outside any Opik trace.",
            OPIK_TRACE_ID,
            raw_trace_id,
        )
        return None
    if raw_span_id is None:
        return Linkage(trace_id, None, project)
    span_id = canonical_uuid_v7(raw_span_id)
    if span_id is None:
        LOGGER.warning(
            "Baggage entry '%s' is not a UUIDv7 (%.60r); "
            "leaving the span outside any Opik trace.",
            OPIK_SPAN_ID,
            raw_span_id,
        )
        return None
    return Linkage(trace_id, span_id, project)


def resolve_linkage(context: Optional[Context], opik_spans: Any = None) -> Optional[Linkage]:
    """Where a span starting in ``context`` belongs in Opik, or ``None``.

    Signals in order: the parent span's attributes, then the linkage
    ``OpikPropagator`` extracted from the request's headers (it applies to the spans
    started directly in the extracted context, i.e. the server span; their
    descendants chain through their parent's attributes), then W3C baggage, then the
    Opik SDK's active ``@opik.track`` span. A partial or invalid signal stops the
    search: a broken upstream context must not silently join an unrelated local trace.

    Args:
        context: the context the span starts in; ``None`` for the current one.
        opik_spans: the Opik SDK's span stack (:func:`opik_span_stack`) when the caller
            has found it already: an empty stack then answers the last step at once.
    """
    if context is None:
        context = get_current()
    parent = context.get(_SPAN_KEY)
    if parent is not None:
        # span_attributes() inlined for the SDK's own span: this is the per-span hot path.
        store = getattr(parent, "_attributes", None)
        attributes = store._dict if type(store) is BoundedAttributes else span_attributes(parent)
        if OPIK_TRACE_ID in attributes or OPIK_SPAN_ID in attributes:
            return parent_span_linkage(attributes)
    return context_linkage(context, opik_spans)


def context_linkage(
    context: Context,
    opik_spans: Any = None,
    from_baggage: Callable[[Mapping[str, Any]], Optional[Linkage]] = baggage_linkage,
) -> Optional[Linkage]:
    """The steps of :func:`resolve_linkage` after the parent span's attributes.

    Args:
        context: the context the span starts in.
        opik_spans: as for :func:`resolve_linkage`.
        from_baggage: reads the linkage of baggage entries that carry ``opik.*`` keys
            (``OpikSpanProcessor`` passes a memo of :func:`baggage_linkage`).
    """
    propagated = cast("Optional[Linkage]", context.get(PROPAGATED_LINKAGE_KEY))
    if propagated is not None:
        return propagated
    entries = cast("Optional[Mapping[str, Any]]", context.get(_BAGGAGE_KEY))
    if entries and (OPIK_TRACE_ID in entries or OPIK_SPAN_ID in entries):
        return from_baggage(entries)
    if opik_spans is not None and not opik_spans.get():
        return None
    # opik is never imported here: if the application has not imported it, no
    # tracked function can be active, and this step costs one dict lookup.
    context_storage = sys.modules.get("opik.context_storage")
    return None if context_storage is None else opik_sdk_linkage(context_storage)


def current_context_getter() -> Callable[[], Context]:
    """``opentelemetry.context.get_current``, or the context variable's own ``get``
    behind it when the runtime context is the API's default contextvars one: it skips
    two Python calls on every span start with no context given."""
    runtime = getattr(opentelemetry.context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return cast("Callable[[], Context]", variable.get)
    return get_current


def opik_span_stack() -> Any:
    """The context variable holding the Opik SDK's stack of active spans, once the
    application has imported ``opik``; ``None`` before (or if the SDK keeps it elsewhere)."""
    context_storage = sys.modules.get("opik.context_storage")
    return getattr(getattr(context_storage, "_context_storage", None), "_spans_data_stack_context", None)


def opik_sdk_linkage(context_storage: Any) -> Optional[Linkage]:
    """Linkage to the innermost active ``@opik.track`` span of the Opik SDK.

    Args:
        context_storage: the imported ``opik.context_storage`` module.
    """
    # Peeking at the SDK's span stack first skips its clean-up pass in the common
    # case of a span started outside any tracked function.
    stack = getattr(getattr(context_storage, "_context_storage", None), "_spans_data_stack_context", None)
    if stack is not None and not stack.get():
        return None
    span_data = context_storage.top_span_data()
    if span_data is None:
        return None
    trace_id = canonical_uuid_v7(getattr(span_data, "trace_id", None))
    if trace_id is None:
        return None
    # The SDK resolves @track(project_name=...) and opik.project_context() into each
    # span's project_name; None means its configured project, which it reads from the
    # same OPIK_PROJECT_NAME / ~/.opik.config as the exporter.
    project = usable_project_name(getattr(span_data, "project_name", None))
    return Linkage(trace_id, canonical_uuid_v7(getattr(span_data, "id", None)), project)


def opik_context_project(context_storage: Any) -> Optional[str]:
    """The project an enclosing ``opik.project_context(...)`` (or ``@track``) set, if any.

    Args:
        context_storage: the imported ``opik.context_storage`` module.
    """
    getter = getattr(context_storage, "get_context_project_name", None)
    return None if getter is None else usable_project_name(getter())


def is_local_root(context: Optional[Context]) -> bool:
    """Tell whether a span starting in ``context`` has no parent span at all."""
    parent = cast("Optional[Span]", (get_current() if context is None else context).get(_SPAN_KEY))
    return parent is None or not parent.get_span_context().is_valid
