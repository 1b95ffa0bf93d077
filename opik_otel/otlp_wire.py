"""Finished spans to OTLP ``ExportTraceServiceRequest`` bytes, without protobuf objects.

The OpenTelemetry encoder builds a protobuf message object per span, attribute and
value from Python, which costs more than creating the span did. :class:`WireEncoder`
writes the same request straight to the wire format, and applies the exporter's
repairs while it writes instead of copying spans first. Its output decodes to exactly
the message ``encode_spans`` builds from the repaired copies (:func:`official_request`,
which stays the fallback; the tests compare the two over generated spans).

Repairs: per-span attribute ``changes`` (a ``None`` value removes the key), and text or
ints that OTLP cannot carry (lone surrogates, ints beyond 64 bits), repaired as
:mod:`opik_otel.spans` does for the copies. A span that cannot be encoded at all (a name
that is not text, an unknown kind) is left out and returned to the caller.
"""

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from .linkage import may_hold_items, span_attributes
from .otlp_values import FIXED64, SMALL, VARINTS, AttributeWriter, field, varint
from .repairs import repaired_attributes, repaired_text
from .spans import changed_attributes, sendable_span, sendable_surroundings, value_fixes

Changes = Optional[Mapping[str, Any]]

# Field tags (field number << 3 | wire type) of the messages written here.
_RESOURCE_SPANS = b"\x0a"  # ExportTraceServiceRequest.resource_spans
_RESOURCE, _SCOPE_SPANS, _SCHEMA_URL = b"\x0a", b"\x12", b"\x1a"  # ResourceSpans (ScopeSpans: scope, spans, schema_url)
_RESOURCE_ATTRIBUTE = b"\x0a"  # Resource.attributes
_SCOPE_NAME, _SCOPE_VERSION, _SCOPE_ATTRIBUTE = b"\x0a", b"\x12", b"\x1a"
_SPAN = b"\x12"  # ScopeSpans.spans
_TRACE_ID, _SPAN_ID, _TRACE_STATE, _PARENT_SPAN_ID, _NAME = b"\x0a\x10", b"\x12\x08", b"\x1a", b"\x22\x08", b"\x2a"
_START, _END, _ATTRIBUTE, _DROPPED_ATTRIBUTES = b"\x39", b"\x41", b"\x4a", b"\x50"
_EVENT, _DROPPED_EVENTS, _LINK, _DROPPED_LINKS, _STATUS = b"\x5a", b"\x60", b"\x6a", b"\x70", b"\x7a"
# Span.flags (field 16, fixed32): "has is_remote" always set, "is remote" for a remote parent.
_LOCAL_FLAGS, _REMOTE_FLAGS = b"\x85\x01\x00\x01\x00\x00", b"\x85\x01\x00\x03\x00\x00"
_EVENT_TIME, _EVENT_NAME, _EVENT_ATTRIBUTE, _EVENT_DROPPED = b"\x09", b"\x12", b"\x1a", b"\x20"
_LINK_ATTRIBUTE, _LINK_DROPPED = b"\x22", b"\x28"
_LINK_LOCAL_FLAGS, _LINK_REMOTE_FLAGS = b"\x35\x00\x01\x00\x00", b"\x35\x00\x03\x00\x00"
_STATUS_MESSAGE, _STATUS_CODE = b"\x12", b"\x18"
# By identity: hashing an Enum member is a Python-level call.
_KINDS = {id(kind): b"\x30" + bytes([kind.value + 1]) for kind in SpanKind}
_UNSET_STATUS = _STATUS + b"\x00"

# Cached encodings of resources and scopes, kept with the object they describe so that
# an id is never mistaken for a later object's.
_CACHE_LIMIT = 256


class Encoded(NamedTuple):
    """A request body, and the spans that could not be encoded (left out of it)."""

    body: bytes
    unencodable: List[ReadableSpan]


class _Unhashable:
    """Group key of a resource or scope whose hash fails (a custom one holding attribute
    keys of mixed types, which the SDK's hash sorts): grouped by identity instead."""

    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


def _group(groups: Dict[Any, Any], item: Any, empty: Any) -> Any:
    """``groups[item]``, set to ``empty`` if new."""
    try:
        return groups.setdefault(item, empty)
    except Exception:
        return groups.setdefault(_Unhashable(item), empty)


def _grouped(key: Any) -> Any:
    return key.item if type(key) is _Unhashable else key


class WireEncoder:
    """Encode batches of finished spans as OTLP/protobuf request bodies.

    One instance per exporter: it remembers the encodings of the resources, scopes and
    attribute keys it has seen. Those memos are its only state, kept in dicts whose
    single operations are atomic, so concurrent ``encode`` calls are safe.
    """

    def __init__(self) -> None:
        self._attributes = AttributeWriter()
        self._resources: Dict[int, Tuple[Any, bytes, bytes]] = {}
        self._scopes: Dict[int, Tuple[Any, bytes, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan], changes: Optional[Sequence[Changes]] = None) -> Encoded:
        """The request body for ``spans``; ``changes[i]`` (if given) alters span i's attributes."""
        groups: Dict[Any, Dict[Any, List[bytes]]] = {}
        unencodable: List[ReadableSpan] = []
        last_resource: Any = None
        last_scope: Any = None
        target: Optional[List[bytes]] = None
        for index, span in enumerate(spans):
            try:
                encoded = self._span(span, changes[index] if changes is not None else None)
            except Exception:
                unencodable.append(span)
                continue
            resource = span.resource
            scope = span.instrumentation_scope or None
            if target is None or resource is not last_resource or scope is not last_scope:
                # Grouped by equality, as the OTel encoder groups them (dict keys).
                target = _group(_group(groups, resource, {}), scope, [])
                last_resource, last_scope = resource, scope
            size = len(encoded)
            target.append(_SPAN + (VARINTS[size] if size < SMALL else varint(size)) + encoded)
        parts = []
        for resource_key, scopes in groups.items():
            head, tail = self._resource_fields(_grouped(resource_key))
            scope_parts = []
            for scope_key, encoded_spans in scopes.items():
                scope_head, scope_tail = self._scope_fields(_grouped(scope_key))
                scope_parts.append(field(_SCOPE_SPANS, scope_head + b"".join(encoded_spans) + scope_tail))
            parts.append(field(_RESOURCE_SPANS, head + b"".join(scope_parts) + tail))
        return Encoded(b"".join(parts), unencodable)

    # --- one span -----------------------------------------------------------------

    def _span(self, span: ReadableSpan, changes: Changes) -> bytes:
        context = span.context
        parent = span.parent
        parts = [_TRACE_ID + context.trace_id.to_bytes(16, "big") + _SPAN_ID + context.span_id.to_bytes(8, "big")]
        trace_state = context.trace_state
        # Most spans share the SDK's default (empty) trace state; asking any other for
        # its length is a Python-level call.
        if trace_state is not DEFAULT_TRACE_STATE and trace_state:
            parts.append(field(_TRACE_STATE, ",".join([f"{k}={v}" for k, v in trace_state.items()]).encode("utf-8")))
        if parent is not None:
            parts.append(_PARENT_SPAN_ID + parent.span_id.to_bytes(8, "big"))
        name = span.name
        if name:
            parts.append(field(_NAME, _text(name)))
        parts.append(_KINDS[id(span.kind)])
        start, end = span.start_time, span.end_time
        if start:
            parts.append(_START + FIXED64(start))
        if end:
            parts.append(_END + FIXED64(end))
        attributes = span_attributes(span)
        mark = len(parts)
        try:
            self._attributes.strict(parts, _ATTRIBUTE, attributes, changes)
        except Exception:
            del parts[mark:]
            fixes = dict(changes or {})
            value_fixes(attributes, fixes)
            self._attributes.lenient(parts, _ATTRIBUTE, changed_attributes(attributes, fixes), "span")
        dropped = span.dropped_attributes
        if dropped:
            parts.append(_DROPPED_ATTRIBUTES + varint(dropped))
        # The SDK's events and links accessors copy under a lock; most spans have none.
        events = getattr(span, "_events", True)
        if may_hold_items(events):
            for event in span.events:
                parts.append(field(_EVENT, self._event(event)))
        dropped = events.dropped if type(events) is BoundedList else span.dropped_events
        if dropped:
            parts.append(_DROPPED_EVENTS + varint(dropped))
        links = getattr(span, "_links", True)
        if may_hold_items(links):
            for link in span.links:
                parts.append(field(_LINK, self._link(link)))
        dropped = links.dropped if type(links) is BoundedList else span.dropped_links
        if dropped:
            parts.append(_DROPPED_LINKS + varint(dropped))
        status = span.status
        if status is not None:
            if status.status_code is StatusCode.UNSET and not status.description:
                parts.append(_UNSET_STATUS)
            else:
                parts.append(field(_STATUS, _status(status)))
        parts.append(_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)
        return b"".join(parts)

    def _event(self, event: Any) -> bytes:
        parts = []
        if event.timestamp:
            parts.append(_EVENT_TIME + FIXED64(event.timestamp))
        name = event.name
        attributes = event.attributes
        try:
            if name:
                parts.append(field(_EVENT_NAME, name.encode("utf-8")))
            self._attributes.strict(parts, _EVENT_ATTRIBUTE, attributes)
        except Exception:
            # Repaired as a whole, as the exporter's copy of the event is.
            del parts[1 if event.timestamp else 0 :]
            if name:
                parts.append(field(_EVENT_NAME, repaired_text(name).encode("utf-8")))
            self._attributes.lenient(parts, _EVENT_ATTRIBUTE, repaired_attributes(attributes) or attributes or {}, "event")
        dropped = event.dropped_attributes
        if dropped:
            parts.append(_EVENT_DROPPED + varint(dropped))
        return b"".join(parts)

    def _link(self, link: Any) -> bytes:
        context = link.context
        parts = [_TRACE_ID + context.trace_id.to_bytes(16, "big") + _SPAN_ID + context.span_id.to_bytes(8, "big")]
        self._safe_attributes(parts, _LINK_ATTRIBUTE, link.attributes, "link")
        dropped = link.dropped_attributes
        if dropped:
            parts.append(_LINK_DROPPED + varint(dropped))
        parts.append(_LINK_REMOTE_FLAGS if context.is_remote else _LINK_LOCAL_FLAGS)
        return b"".join(parts)

    def _safe_attributes(self, parts: List[bytes], tag: bytes, attributes: Any, where: str) -> None:
        mark = len(parts)
        try:
            self._attributes.strict(parts, tag, attributes)
        except Exception:
            del parts[mark:]
            self._attributes.lenient(parts, tag, repaired_attributes(attributes) or attributes or {}, where)

    # --- resources and scopes, encoded once per object ------------------------------

    def _resource_fields(self, resource: Any) -> Tuple[bytes, bytes]:
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1], cached[2]
        parts: List[bytes] = []
        self._safe_attributes(parts, _RESOURCE_ATTRIBUTE, resource.attributes, "resource")
        content = b"".join(parts)
        schema_url = resource.schema_url
        head = field(_RESOURCE, content)
        tail = field(_SCHEMA_URL, _text(schema_url)) if schema_url else b""
        _remember(self._resources, resource, head, tail)
        return head, tail

    def _scope_fields(self, scope: Any) -> Tuple[bytes, bytes]:
        cached = self._scopes.get(id(scope))
        if cached is not None and cached[0] is scope:
            return cached[1], cached[2]
        content = b""
        tail = b""
        if scope is not None:
            parts = []
            if scope.name:
                parts.append(field(_SCOPE_NAME, _text(scope.name)))
            if scope.version:
                parts.append(field(_SCOPE_VERSION, _text(scope.version)))
            self._safe_attributes(parts, _SCOPE_ATTRIBUTE, scope.attributes, "scope")
            content = b"".join(parts)
            if scope.schema_url:
                tail = field(_SCHEMA_URL, _text(scope.schema_url))
        head = field(b"\x0a", content)
        _remember(self._scopes, scope, head, tail)
        return head, tail


def _remember(cache: Dict[int, Tuple[Any, bytes, bytes]], owner: Any, head: bytes, tail: bytes) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[id(owner)] = (owner, head, tail)


def _status(status: Any) -> bytes:
    parts = []
    description = status.description
    if description:
        parts.append(field(_STATUS_MESSAGE, _text(description)))
    code = status.status_code.value
    if code:
        parts.append(_STATUS_CODE + varint(code))
    return b"".join(parts)


def _text(value: str) -> bytes:
    """UTF-8 of ``value``; lone surrogates become U+FFFD as the exporter's repairs do."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        return repaired_text(value).encode("utf-8")


def official_request(spans: Sequence[ReadableSpan], changes: Optional[Sequence[Changes]] = None) -> Encoded:
    """What :meth:`WireEncoder.encode` returns, made with OTel's own encoder from
    repaired copies of the spans: the fallback for a suspected encoder bug
    (``OPIK_OTEL_ENCODER=otel``), slower but independent of this module."""
    copies = []
    for index, span in enumerate(spans):
        fixes = dict(changes[index] or {}) if changes is not None else {}
        value_fixes(span_attributes(span), fixes)
        copies.append(sendable_span(span, fixes))
    copies = sendable_surroundings(copies)
    try:
        return Encoded(encode_spans(copies).SerializeToString(), [])
    except Exception:
        pass
    merged = ExportTraceServiceRequest()
    unencodable = []
    for original, copy in zip(spans, copies):
        try:
            merged.MergeFrom(encode_spans([copy]))
        except Exception:
            unencodable.append(original)
    return Encoded(merged.SerializeToString(), unencodable)

