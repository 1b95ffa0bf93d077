"""Opik's distributed-trace headers on both sides of an HTTP call.

Server side: :func:`extract_opik_distributed_trace_attributes` reads the
``opik_trace_id`` / ``opik_parent_span_id`` headers the Opik SDK sends, and
:func:`attach_to_parent` places a boundary span in that trace. Client side:
:func:`get_distributed_trace_headers` and :func:`context_with_opik_baggage` hand the
current span's linkage to the next service.

Headers come in every shape servers produce: a dict or any ``Mapping``, a list of
``(name, value)`` pairs (ASGI, with bytes), multi-valued entries, or a WSGI
``environ``. Both the underscore spelling and the hyphenated one are read, because
gunicorn and nginx silently drop header names containing underscores.
"""

from typing import Any, Dict, Iterable, List, Optional, Tuple

from opentelemetry import baggage, trace
from opentelemetry.context import Context, get_current

from ._logging import get_logger
from .attributes import (
    DROPPED_SPAN,
    MINTED_TRACE,
    OPIK_PARENT_SPAN_ID,
    OPIK_SPAN_ID,
    OPIK_TRACE_ID,
    PROJECT_NAME,
    SAMPLED_OUT,
)
from .ids import canonical_uuid_v7, generate_id
from .linkage import Linkage, span_attributes, span_linkage
from .projects import (
    OPIK_PROJECT_NAME_BAGGAGE,
    OPIK_PROJECT_NAME_HEADER,
    OPIK_PROJECT_NAME_HEADER_HYPHENATED,
    first_of_joined_project,
    usable_project_name,
)
from .types import OpikDistributedTraceAttributes

LOGGER = get_logger(__name__)

OPIK_TRACE_ID_HEADER = "opik_trace_id"
OPIK_PARENT_SPAN_ID_HEADER = "opik_parent_span_id"
OPIK_TRACE_ID_HEADER_HYPHENATED = "opik-trace-id"
OPIK_PARENT_SPAN_ID_HEADER_HYPHENATED = "opik-parent-span-id"

_WSGI_PREFIX = "http_"


def _normalized_header_name(name: Any) -> Optional[str]:
    """Fold every spelling of a header name onto its lower-case underscore form."""
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    if not isinstance(name, str):
        return None
    folded = name.lower().replace("-", "_")
    if folded.startswith(_WSGI_PREFIX):
        folded = folded[len(_WSGI_PREFIX) :]
    return folded


def _header_items(headers: Any) -> Iterable[Any]:
    if headers is None:
        return ()
    if hasattr(headers, "items"):
        return headers.items()  # type: ignore[no-any-return]
    return headers  # type: ignore[no-any-return]


def _first_value(value: Any) -> Optional[str]:
    """The header's value as text: bytes decoded, the first of several values taken."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.strip() if isinstance(value, str) else None


def _find_headers(headers: Any, names: Tuple[str, ...]) -> List[Optional[str]]:
    """Values of the first header matching each of ``names``, case-insensitively."""
    found: List[Optional[str]] = [None] * len(names)
    matched = [False] * len(names)
    for item in _header_items(headers):
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        normalized = _normalized_header_name(key)
        for index, name in enumerate(names):
            if not matched[index] and normalized == name:
                matched[index] = True
                found[index] = _first_value(value)
        if all(matched):
            break
    return found


def _first_of_joined(value: Optional[str], header: str) -> Optional[str]:
    """Take the first non-blank element of a comma-joined value.

    WSGI servers that keep underscores map ``opik_trace_id`` and ``opik-trace-id`` to
    the same ``HTTP_OPIK_TRACE_ID`` variable and join both values with a comma; one of
    them may be empty.
    """
    if not value or "," not in value:
        return value
    elements = [element for element in (part.strip() for part in value.split(",")) if element]
    if not elements:
        return ""
    first = elements[0]
    if any(canonical_uuid_v7(e) != canonical_uuid_v7(first) for e in elements[1:]):
        LOGGER.warning(
            "Opik distributed trace header '%s' holds several different values; "
            "using the first one.",
            header,
        )
    return first


def extract_opik_distributed_trace_attributes(
    http_headers: Any,
) -> Optional[OpikDistributedTraceAttributes]:
    """Read Opik's distributed-trace headers from an incoming request.

    Args:
        http_headers: the request's headers: a dict or any mapping, a list of
            ``(name, value)`` pairs, or a WSGI ``environ``. Names match
            case-insensitively in both spellings (``opik_trace_id`` and
            ``opik-trace-id``); the first match wins; bytes values are decoded,
            the first of several values is used, values are trimmed.

    Returns:
        The trace (and parent span) to join, with canonical ids, or ``None`` when
        there is no usable trace id. A trace id that is not a UUIDv7 gives ``None``
        and a warning; an invalid parent id is dropped with a warning. Never raises.
    """
    try:
        raw_trace_id, raw_parent_span_id, raw_project = _find_headers(
            http_headers, (OPIK_TRACE_ID_HEADER, OPIK_PARENT_SPAN_ID_HEADER, OPIK_PROJECT_NAME_HEADER)
        )
        trace_id = _first_of_joined(raw_trace_id, OPIK_TRACE_ID_HEADER)
        parent_span_id = _first_of_joined(raw_parent_span_id, OPIK_PARENT_SPAN_ID_HEADER)
        project = _header_project(raw_project)
    except Exception:
        LOGGER.warning("Could not read Opik distributed trace headers.", exc_info=True)
        return None

    if not trace_id:
        if parent_span_id:
            LOGGER.warning(
                "Opik distributed trace header '%s' is missing while '%s' is given; "
                "the request is not linked to an Opik trace.",
                OPIK_TRACE_ID_HEADER,
                OPIK_PARENT_SPAN_ID_HEADER,
            )
        return None
    canonical_trace_id = canonical_uuid_v7(trace_id)
    if canonical_trace_id is None:
        LOGGER.warning(
            "Opik distributed trace header '%s' is not a UUIDv7 (%.60r); "
            "the request is not linked to an Opik trace.",
            OPIK_TRACE_ID_HEADER,
            trace_id,
        )
        return None

    canonical_parent_span_id = None
    if parent_span_id:
        canonical_parent_span_id = canonical_uuid_v7(parent_span_id)
        if canonical_parent_span_id is None:
            LOGGER.warning(
                "Opik distributed trace header '%s' is not a UUIDv7 (%.60r); "
                "joining the trace without a parent span.",
                OPIK_PARENT_SPAN_ID_HEADER,
                parent_span_id,
            )
    return OpikDistributedTraceAttributes(canonical_trace_id, canonical_parent_span_id, project)


def _header_project(value: Optional[str]) -> Optional[str]:
    """The caller's project from ``opik_project_name``; a blank one is absent, an
    unusable one is dropped with a warning (the span goes to this service's project)."""
    if not value:
        return None
    project = usable_project_name(first_of_joined_project(value))
    if project is None:
        LOGGER.warning(
            "Opik distributed trace header '%s' is not a usable project name (%.60r); "
            "the request's spans go to this service's configured project.",
            OPIK_PROJECT_NAME_HEADER,
            value,
        )
    return project


def attach_to_parent(span: trace.Span, http_headers: Any) -> bool:
    """Place a server's boundary span in the Opik trace named by the request headers.

    Sets, in one call, ``opik.trace_id``, ``opik.parent_span_id`` (when the headers
    name one) and a fresh ``opik.span_id`` so that ``OpikSpanProcessor`` chains the
    span's descendants under it. Without a parent id the span becomes top-level in
    the trace, even if it had been stamped with a parent from another trace before.
    The span and its descendants go to the project the ``opik_project_name`` header
    names (sent by opik_otel callers), else to this service's configured project.

    Returns:
        ``True`` when the span was attached, ``False`` when the headers carry no
        usable Opik trace. Never raises.
    """
    attributes = extract_opik_distributed_trace_attributes(http_headers)
    if attributes is None:
        return False
    try:
        new_attributes = attributes.as_attributes()
        new_attributes[OPIK_SPAN_ID] = generate_id()
        if attributes.opik_parent_span_id is None:
            _remove_attribute(span, OPIK_PARENT_SPAN_ID)
        if attributes.opik_project_name is None:
            _remove_attribute(span, PROJECT_NAME)
        # The trace now comes from upstream, which owns its row; a span linked from
        # Opik is always exported, whatever span_filter or sample_rate decided at start.
        for marker in (MINTED_TRACE, DROPPED_SPAN, SAMPLED_OUT):
            _remove_attribute(span, marker)
        span.set_attributes(new_attributes)
    except Exception:
        LOGGER.warning("Could not attach a span to its Opik parent.", exc_info=True)
        return False
    return True


def _remove_attribute(span: Any, key: str) -> None:
    """Drop an attribute the OTel API offers no way to unset.

    The SDK's attribute store supports deletion; for any other span the key is
    overwritten with an empty string, which Opik ignores as not being a UUIDv7.
    """
    if key not in span_attributes(span):
        return
    bounded = getattr(span, "_attributes", None)
    try:
        del bounded[key]  # type: ignore[union-attr]
    except Exception:
        span.set_attribute(key, "")


def get_distributed_trace_headers(
    span: Optional[trace.Span] = None, *, hyphenated: bool = False
) -> Optional[Dict[str, str]]:
    """Headers that make a downstream service join the current Opik trace.

    Args:
        span: the OTel span whose linkage to pass on; defaults to the current span.
        hyphenated: also include ``opik-trace-id`` / ``opik-parent-span-id``. gunicorn,
            nginx and werkzeug's server drop header names containing underscores, so
            set this when the headers go over HTTP to a server you do not control.

    Returns:
        ``{"opik_trace_id": ..., "opik_parent_span_id": ...}`` when the span is inside
        an Opik subtree (its ``opik.trace_id`` and ``opik.span_id`` are set), else
        ``None``; plus ``opik_project_name`` when the span knows its trace's project,
        so that a downstream opik_otel service writes to the same project (the Opik
        SDK ignores it and logs into its own project). The receiving side (Opik SDK
        ``@track`` or ``attach_to_parent``) parents its spans under this span.
    """
    try:
        linkage = span_linkage(span if span is not None else trace.get_current_span())
    except Exception:
        LOGGER.warning("Could not read Opik linkage from a span.", exc_info=True)
        return None
    if linkage is None:
        return None
    headers = {OPIK_TRACE_ID_HEADER: linkage.trace_id}
    if hyphenated:
        headers[OPIK_TRACE_ID_HEADER_HYPHENATED] = linkage.trace_id
    # No parent inside a root that span_filter dropped: the callee is top-level.
    if linkage.parent_span_id is not None:
        headers[OPIK_PARENT_SPAN_ID_HEADER] = linkage.parent_span_id
        if hyphenated:
            headers[OPIK_PARENT_SPAN_ID_HEADER_HYPHENATED] = linkage.parent_span_id
    if linkage.project_name is not None:
        headers[OPIK_PROJECT_NAME_HEADER] = linkage.project_name
        if hyphenated:
            headers[OPIK_PROJECT_NAME_HEADER_HYPHENATED] = linkage.project_name
    return headers


def get_opik_trace_id(span: Optional[trace.Span] = None) -> Optional[str]:
    """The Opik trace id of ``span`` (default: the current span), or ``None``.

    Use it to log or correlate the Opik trace at run time, or to attach feedback.
    """
    try:
        current = span if span is not None else trace.get_current_span()
        return canonical_uuid_v7(span_attributes(current).get(OPIK_TRACE_ID))
    except Exception:
        LOGGER.warning("Could not read the Opik trace id from a span.", exc_info=True)
        return None


def context_with_opik_baggage(
    context: Optional[Context] = None, span: Optional[trace.Span] = None
) -> Context:
    """Return ``context`` with the span's Opik linkage added as W3C baggage.

    The entries are ``opik.trace_id``, ``opik.span_id`` and, when the span knows
    its trace's project, ``opik.project_name``; a downstream
    ``OpikSpanProcessor`` links its spans under this span when the baggage
    propagator carries them. Attach the returned context around the outgoing call
    (``opentelemetry.context.attach``) or pass it to ``propagate.inject``. When the
    span has no Opik linkage the context is returned unchanged.
    """
    base = context if context is not None else get_current()
    try:
        linkage = span_linkage(span if span is not None else trace.get_current_span(base))
        if linkage is None:
            return base
        return with_linkage_baggage(base, linkage)
    except Exception:
        LOGGER.warning("Could not put Opik linkage into baggage.", exc_info=True)
        return base


def with_linkage_baggage(context: Context, linkage: Linkage) -> Context:
    """``context`` with its ``opik.*`` baggage entries set to ``linkage``."""
    context = baggage.set_baggage(OPIK_TRACE_ID, linkage.trace_id, context)
    if linkage.project_name is None:
        context = baggage.remove_baggage(OPIK_PROJECT_NAME_BAGGAGE, context)
    else:
        context = baggage.set_baggage(OPIK_PROJECT_NAME_BAGGAGE, linkage.project_name, context)
    if linkage.parent_span_id is None:
        return baggage.remove_baggage(OPIK_SPAN_ID, context)
    return baggage.set_baggage(OPIK_SPAN_ID, linkage.parent_span_id, context)
