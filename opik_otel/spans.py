"""Copies of finished spans with changed attributes (``ReadableSpan`` is immutable)."""

from typing import Any, Mapping, Optional, Sequence

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan


def copy_span(
    span: ReadableSpan,
    attributes: Optional[Mapping[str, Any]] = None,
    events: Optional[Sequence[Any]] = None,
) -> ReadableSpan:
    """Return ``span`` with its attributes and/or events replaced, all else kept."""
    if attributes is not None:
        store = BoundedAttributes(attributes=attributes, immutable=True)
        # The exporter reports how many attributes the SDK dropped; a copy keeps that.
        store.dropped = span.dropped_attributes
        attributes = store
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes if attributes is None else attributes,
        events=span.events if events is None else events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def with_attributes(span: ReadableSpan, changes: Mapping[str, Any]) -> ReadableSpan:
    """Return ``span`` with ``changes`` applied; a ``None`` value removes the key."""
    attributes = dict(span.attributes or {})
    for key, value in changes.items():
        if value is None:
            attributes.pop(key, None)
        else:
            attributes[key] = value
    return copy_span(span, attributes=attributes)
