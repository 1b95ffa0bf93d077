"""Copies of finished spans with changed parts (``ReadableSpan`` is immutable)."""

from typing import Any, Dict, Mapping, Optional, Sequence

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Status


def copy_span(
    span: ReadableSpan,
    attributes: Optional[Mapping[str, Any]] = None,
    events: Optional[Sequence[Any]] = None,
    name: Optional[str] = None,
    status: Optional[Status] = None,
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
        events=span.events if events is None else events,
        links=span.links,
        kind=span.kind,
        status=span.status if status is None else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def changed_attributes(attributes: Optional[Mapping[str, Any]], changes: Mapping[str, Any]) -> Dict[str, Any]:
    """``attributes`` with ``changes`` applied; a ``None`` value removes the key."""
    result = dict(attributes or {})
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result

