"""Finished spans made fit to send: copies with changed parts (``ReadableSpan`` is
immutable), and the repairs Opik or the OTLP encoder would otherwise choke on."""

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status

from ._logging import get_logger
from .attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from .ids import canonical_uuid_v7, generate_id
from .linkage import may_hold_items, span_attributes
from .trace_rows import OPIK_METADATA, OPIK_TAGS
from .repairs import (
    is_sendable_text,
    is_sendable_value,
    repaired_attribute_value,
    repaired_attributes,
    repaired_text,
    strict_json_text,
)

LOGGER = get_logger(__name__)

USAGE_PREFIX = "gen_ai.usage."
ID_ATTRIBUTES = (OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID)


def copy_span(
    span: ReadableSpan,
    attributes: Optional[Mapping[str, Any]] = None,
    events: Optional[Sequence[Any]] = None,
    name: Optional[str] = None,
    status: Optional[Status] = None,
    links: Optional[Sequence[Link]] = None,
    resource: Optional[Resource] = None,
    instrumentation_scope: Optional[InstrumentationScope] = None,
) -> ReadableSpan:
    """Return ``span`` with the given parts replaced, all else kept."""
    if attributes is None and span.dropped_attributes:
        # span.attributes is a read-only view, which would lose the dropped count.
        attributes = span.attributes
    if attributes is not None:
        store = BoundedAttributes(attributes=attributes, immutable=True)
        # The exporter reports how many attributes the SDK dropped; a copy keeps that.
        store.dropped = span.dropped_attributes
        attributes = store
    return ReadableSpan(
        name=span.name if name is None else name,
        context=span.context,
        parent=span.parent,
        resource=span.resource if resource is None else resource,
        attributes=span.attributes if attributes is None else attributes,
        events=with_dropped(span.events if events is None else events, span.dropped_events),
        links=with_dropped(span.links if links is None else links, span.dropped_links),
        kind=span.kind,
        status=span.status if status is None else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope if instrumentation_scope is None else instrumentation_scope,
    )


def with_dropped(items: Sequence[Any], dropped: int) -> Sequence[Any]:
    """``items`` carrying the SDK's count of dropped ones, which the exporter reports."""
    if not dropped:
        return tuple(items)
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded


def changed_attributes(attributes: Optional[Mapping[str, Any]], changes: Mapping[str, Any]) -> Dict[str, Any]:
    """``attributes`` with ``changes`` applied; a ``None`` value removes the key."""
    result = dict(attributes or {})
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def id_fix(key: str, value: Any, changes: Dict[str, Any]) -> bool:
    """The Opik id attribute ``key`` written in canonical form; an invalid one left out
    (Opik would ignore it with a warning, and a wrong spelling must never be stored).
    ``True`` when ``value`` is canonical already."""
    canonical = canonical_uuid_v7(value)
    if canonical is None:
        changes[key] = None
        LOGGER.warning("Span attribute '%s' is not a UUIDv7 string; it is left out of the export.", key)
    elif canonical is not value:
        changes[key] = canonical
    return canonical is value


# How many recent Opik span ids the exporter remembers to catch one given to two spans.
SEEN_SPAN_IDS_LIMIT = 16_384


def distinct_span_id_fix(span: ReadableSpan, changes: Dict[str, Any], seen: Dict[str, int]) -> None:
    """Give ``span`` a fresh ``opik.span_id`` when an earlier span (a different OTel span)
    already used its id: Opik keeps one span per id, so one of the two would be lost.
    User code setting ``opik.span_id`` itself is how that happens. ``seen`` maps recent
    Opik span ids to the OTel span id that used them; it is forgotten at
    :data:`SEEN_SPAN_IDS_LIMIT` entries."""
    span_id = changes.get(OPIK_SPAN_ID, span_attributes(span).get(OPIK_SPAN_ID))
    if not isinstance(span_id, str):
        return
    otel_span_id = span.context.span_id if span.context is not None else 0
    first = seen.get(span_id)
    if first is None:
        if len(seen) >= SEEN_SPAN_IDS_LIMIT:
            seen.clear()
        seen[span_id] = otel_span_id
        return
    if first == otel_span_id:
        return  # the same span exported again: an upsert, nothing lost
    fresh = generate_id((span.start_time or 0) // 1_000_000 or None)
    seen[fresh] = otel_span_id
    changes[OPIK_SPAN_ID] = fresh
    LOGGER.warning(
        "Span attribute '%s' repeats the Opik id %s of another span; this span gets a fresh id "
        "so that Opik keeps both. Set opik.span_id on one span only.",
        OPIK_SPAN_ID,
        span_id,
    )


def value_fixes(attributes: Mapping[str, Any], changes: Dict[str, Any]) -> None:
    """Keys and values the OTLP encoder would fail on (see :mod:`opik_otel.repairs`):
    repaired, never dropped."""
    for key, value in attributes.items():
        if key in changes:
            continue
        if key == "":
            changes[key] = None  # the SDK refuses empty keys; a copy would drop it
        elif not is_sendable_text(key):
            changes[key] = None
            fixed_key = repaired_text(key)
            if fixed_key not in attributes:
                changes[fixed_key] = repaired_attribute_value(value)
        elif not is_sendable_value(value):
            changes[key] = repaired_attribute_value(value)


def sendable_span(span: ReadableSpan, changes: Dict[str, Any]) -> ReadableSpan:
    """``span`` with attribute ``changes`` (None removes) and any unencodable name,
    status description or event attribute repaired."""
    name = span.name
    name_fixed = not is_sendable_text(name)
    events = None
    for index, event in enumerate(span.events or ()):
        event_name = event.name
        fixed_attributes = repaired_attributes(event.attributes)
        if fixed_attributes is not None or not is_sendable_text(event_name):
            if events is None:
                events = list(span.events)
            attributes: Any = event.attributes
            if fixed_attributes is not None:
                attributes = BoundedAttributes(attributes=fixed_attributes, immutable=True)
                if isinstance(event.attributes, BoundedAttributes):
                    # The exporter reports how many attributes the SDK dropped; a copy keeps that.
                    attributes.dropped = event.attributes.dropped
            events[index] = Event(repaired_text(event_name), attributes, event.timestamp)
    description = span.status.description if span.status is not None else None
    status_fixed = description is not None and not is_sendable_text(description)
    if not changes and not name_fixed and events is None and not status_fixed:
        return span
    return copy_span(
        span,
        attributes=changed_attributes(span.attributes, changes) if changes else None,
        events=tuple(events) if events is not None else None,
        name=repaired_text(name) if name_fixed else None,
        status=Status(span.status.status_code, repaired_text(description)) if status_fixed else None,
    )


def with_text_keys_and_name(span: ReadableSpan) -> ReadableSpan:
    """``span`` whose attribute keys and name are all text, which the rest of the
    preparation (and Opik's attribute rules) assume; others' ``ReadableSpan`` built from
    plain dicts may hold anything (values are then repaired too)."""
    attributes = span.attributes or {}
    if type(span.name) is str and all(type(key) is str for key in attributes):
        return span
    return copy_span(span, attributes=repaired_attributes(attributes), name=repaired_text(span.name))


def sendable_surroundings(spans: Sequence[ReadableSpan]) -> List[ReadableSpan]:
    """``spans`` with link attributes, resources and instrumentation scopes repaired
    where the OTLP encoder would fail on them (it logs a traceback per attribute and
    batch, or refuses the batch). Spans share few resources and scopes, so each is
    checked once per call."""
    resources: Dict[int, Resource] = {}
    scopes: Dict[int, Optional[InstrumentationScope]] = {}
    result: List[ReadableSpan] = []
    for span in spans:
        links = _sendable_links(span.links) if may_hold_items(getattr(span, "_links", True)) else None
        resource = span.resource
        if id(resource) not in resources:
            resources[id(resource)] = _sendable_resource(resource)
        scope = span.instrumentation_scope
        if id(scope) not in scopes:
            scopes[id(scope)] = _sendable_scope(scope)
        fixed_resource = resources[id(resource)]
        fixed_scope = scopes[id(scope)]
        if links is None and fixed_resource is resource and fixed_scope is scope:
            result.append(span)
        else:
            result.append(copy_span(span, links=links, resource=fixed_resource, instrumentation_scope=fixed_scope))
    return result


def _sendable_links(links: Sequence[Link]) -> Optional[List[Link]]:
    fixed: Optional[List[Link]] = None
    for index, link in enumerate(links or ()):
        attributes = repaired_attributes(link.attributes)
        if attributes is not None:
            if fixed is None:
                fixed = list(links)
            store = BoundedAttributes(attributes=attributes, immutable=True)
            store.dropped = link.dropped_attributes
            fixed[index] = Link(link.context, store)
    return fixed


def _sendable_resource(resource: Resource) -> Resource:
    if resource is None:
        return resource
    attributes = repaired_attributes(resource.attributes)
    if attributes is None and _is_optional_text(resource.schema_url):
        return resource
    return Resource(
        resource.attributes if attributes is None else attributes, _repaired_optional_text(resource.schema_url)
    )


def _sendable_scope(scope: Optional[InstrumentationScope]) -> Optional[InstrumentationScope]:
    if scope is None:
        return None
    attributes = repaired_attributes(scope.attributes)
    if (
        attributes is None
        and is_sendable_text(scope.name)
        and _is_optional_text(scope.version)
        and _is_optional_text(scope.schema_url)
    ):
        return scope
    return InstrumentationScope(
        repaired_text(scope.name),
        _repaired_optional_text(scope.version),
        _repaired_optional_text(scope.schema_url),
        scope.attributes if attributes is None else attributes,
    )


def _is_optional_text(value: Any) -> bool:
    return value is None or is_sendable_text(value)


def _repaired_optional_text(value: Any) -> Optional[str]:
    return None if value is None else repaired_text(value)


# Usage values sent as OTLP numbers, booleans, arrays or maps, as they are.
_PLAIN_USAGE_TYPES = (int, float, bool, tuple, list, dict)


def is_invalid_usage(key: str, value: Any) -> bool:
    """Whether the usage attribute ``key`` must be left out (one warning): Opik would
    reject the whole request for a string that is not strict JSON (its parser takes no
    NaN/Infinity either), a byte string (which arrives as base64 text, never JSON) or a
    value of another type, which would be sent as text."""
    kind = type(value)
    if kind in _PLAIN_USAGE_TYPES:
        return False
    if kind is str:
        try:
            json.loads(value, parse_constant=_refuse_constant)
            return False
        except (ValueError, RecursionError):
            pass
    LOGGER.warning(
        "Span attribute '%s' is not JSON (nor a number); Opik would refuse the "
        "whole batch for it, so it is left out.",
        key,
    )
    return True


def strict_json_fixes(attributes: Mapping[str, Any], changes: Dict[str, Any]) -> None:
    """``opik.metadata`` and ``opik.tags`` JSON strings holding NaN or Infinity (which
    Python's ``json.dumps`` writes) rewritten with those numbers as strings: Opik's strict
    parser would reject the whole request for them."""
    for key in (OPIK_METADATA, OPIK_TAGS):
        value = changes.get(key, attributes.get(key))
        if type(value) is str and ("NaN" in value or "Infinity" in value):
            fixed = strict_json_text(value)
            if fixed is not None:
                changes[key] = fixed


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
