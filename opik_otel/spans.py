"""Finished spans made fit to send: copies with changed parts (``ReadableSpan`` is
immutable), and the repairs Opik or the OTLP encoder would otherwise choke on."""

import json
from typing import Any, Dict, Mapping, Optional, Sequence

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Status

from ._logging import get_logger
from .attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from .ids import canonical_uuid_v7

LOGGER = get_logger(__name__)

_USAGE_PREFIX = "gen_ai.usage."
_ID_ATTRIBUTES = (OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def copy_span(
    span: ReadableSpan,
    attributes: Optional[Mapping[str, Any]] = None,
    events: Optional[Sequence[Any]] = None,
    name: Optional[str] = None,
    status: Optional[Status] = None,
    links: Optional[Sequence[Any]] = None,
) -> ReadableSpan:
    """Return ``span`` with the given parts replaced, all else kept."""
    if attributes is not None:
        store = BoundedAttributes(attributes=attributes, immutable=True)
        # The exporter reports how many attributes the SDK dropped; a copy keeps that.
        store.dropped = span.dropped_attributes
        attributes = store
    return ReadableSpan(
        name=span.name if name is None else name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes if attributes is None else attributes,
        events=with_dropped(span.events if events is None else events, span.dropped_events),
        links=with_dropped(span.links if links is None else links, span.dropped_links),
        kind=span.kind,
        status=span.status if status is None else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
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


def id_fixes(attributes: Mapping[str, Any], changes: Dict[str, Any]) -> None:
    """Opik ids written in canonical form; invalid ones left out (Opik would ignore them
    with a warning, and a wrong spelling must never be stored)."""
    for key in _ID_ATTRIBUTES:
        if key in attributes:
            value = attributes[key]
            canonical = canonical_uuid_v7(value)
            if canonical is None:
                changes[key] = None
                LOGGER.warning("Span attribute '%s' is not a UUIDv7 string; it is left out of the export.", key)
            elif canonical is not value:
                changes[key] = canonical


def value_fixes(attributes: Mapping[str, Any], changes: Dict[str, Any]) -> None:
    """Keys and values the OTLP encoder would fail on (lone surrogates, ints beyond
    64 bits): repaired, never dropped."""
    for key, value in attributes.items():
        if key in changes:
            continue
        if needs_fix(key):
            changes[key] = None
            fixed_key = fixed_value(key)
            if fixed_key not in attributes:
                changes[fixed_key] = fixed_value(value)
        elif needs_fix(value):
            changes[key] = fixed_value(value)


def needs_fix(value: Any) -> bool:
    """Whether the OTLP encoder would fail on ``value`` (lone surrogates, huge ints)."""
    kind = type(value)
    if kind is str:
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
            return False
        except UnicodeEncodeError:
            return True
    if kind is int:
        return not _INT64_MIN <= value <= _INT64_MAX
    if kind is tuple or kind is list:
        return any(needs_fix(item) for item in value)
    return False


def fixed_value(value: Any) -> Any:
    """``value`` made encodable: surrogates replaced, out-of-range ints as text."""
    kind = type(value)
    if kind is str:
        return value.encode("utf-8", "replace").decode("utf-8")
    if kind is int:
        return str(value)
    if kind is tuple or kind is list:
        return tuple(fixed_value(item) for item in value)
    return value


def sendable_span(span: ReadableSpan, changes: Dict[str, Any]) -> ReadableSpan:
    """``span`` with attribute ``changes`` (None removes) and any unencodable name,
    status description or event attribute repaired."""
    name = span.name
    name_fixed = isinstance(name, str) and needs_fix(name)
    events = None
    for index, event in enumerate(span.events or ()):
        event_attributes = event.attributes or {}
        event_name = event.name
        if needs_fix(event_name) or any(needs_fix(key) or needs_fix(value) for key, value in event_attributes.items()):
            if events is None:
                events = list(span.events)
            fixed_attributes = {fixed_value(key): fixed_value(value) for key, value in event_attributes.items()}
            events[index] = Event(fixed_value(event_name), fixed_attributes, event.timestamp)
    description = span.status.description if span.status is not None else None
    status_fixed = isinstance(description, str) and needs_fix(description)
    if not changes and not name_fixed and events is None and not status_fixed:
        return span
    return copy_span(
        span,
        attributes=changed_attributes(span.attributes, changes) if changes else None,
        events=tuple(events) if events is not None else None,
        name=fixed_value(name) if name_fixed else None,
        status=Status(span.status.status_code, fixed_value(description)) if status_fixed else None,
    )


def invalid_usage_removals(attributes: Mapping[str, Any]) -> Dict[str, Any]:
    """Usage attributes Opik would reject the whole request for: strings that are not
    strict JSON (Opik's parser takes no NaN/Infinity either) and byte strings (which
    arrive as base64 text, never JSON)."""
    removals: Dict[str, Any] = {}
    for key, value in attributes.items():
        kind = type(value)
        if (kind is str or kind is bytes) and key.startswith(_USAGE_PREFIX):
            if kind is str:
                try:
                    json.loads(value, parse_constant=_refuse_constant)
                    continue
                except (ValueError, RecursionError):
                    pass
            LOGGER.warning(
                "Span attribute '%s' is not JSON (nor a number); Opik would refuse the "
                "whole batch for it, so it is left out.",
                key,
            )
            removals[key] = None
    return removals


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
