"""Request bodies bound for Opik, and how to make them smaller.

A :class:`Payload` is one request: OTLP spans (protobuf) or trace rows (JSON). When
Opik (or a proxy) refuses it as too large, it splits in halves, and a single span or
row that is still too large has its largest values cut, with a marker saying how much.
Ids, names and ``opik.*`` linkage are never cut.
"""

import copy
import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .sizing import PROTECTED_ATTRIBUTES, truncation_marker

SPANS = "otlp"
TRACES = "traces"

_ROW_TRUNCATABLE_FIELDS = ("input", "output", "metadata", "error_info")
_MAX_JSON_DEPTH = 64
_MARKER_AT_END = re.compile(
    re.escape(truncation_marker(0).encode("utf-8")).replace(b"0", rb"(\d+)") + rb"\Z", re.DOTALL
).search


class Payload:
    """A request body of one kind, with the structured message it came from (or will
    be parsed into, lazily, when it has to be split)."""

    __slots__ = ("kind", "_body", "_message")

    def __init__(self, kind: str, *, body: Optional[bytes] = None, message: Any = None) -> None:
        self.kind = kind
        self._body = body
        self._message = message

    @property
    def body(self) -> bytes:
        if self._body is None:
            if self.kind == SPANS:
                self._body = self._message.SerializeToString()
            else:
                self._body = dump_json(self._message).encode("utf-8")
        return self._body

    def _parsed(self) -> Any:
        if self._message is None:
            try:
                if self.kind == SPANS:
                    self._message = ExportTraceServiceRequest.FromString(self.body)
                else:
                    document = json.loads(self.body)
                    if isinstance(document, dict) and isinstance(document.get("traces"), list):
                        self._message = document
            except (DecodeError, ValueError, UnicodeDecodeError, RecursionError):
                self._message = None
        return self._message

    def split(self) -> Optional[Tuple["Payload", "Payload"]]:
        message = self._parsed()
        if message is None:
            return None
        if self.kind == SPANS:
            halves = _split_spans_request(message)
            if halves is None:
                return None
            return Payload(SPANS, message=halves[0]), Payload(SPANS, message=halves[1])
        rows = message["traces"]
        if len(rows) < 2:
            return None
        middle = (len(rows) + 1) // 2
        return (
            Payload(TRACES, message={**message, "traces": rows[:middle]}),
            Payload(TRACES, message={**message, "traces": rows[middle:]}),
        )

    def truncated(self, max_bytes: int) -> Optional["Payload"]:
        """A copy of a one-item payload whose largest values are cut to fit
        ``max_bytes``; None when there is nothing to cut."""
        message = self._parsed()
        if message is None:
            return None
        smaller: Optional[Any]
        if self.kind == SPANS:
            smaller = _truncate_spans_request(message, max_bytes)
        else:
            smaller = _truncate_rows_document(message, max_bytes)
        return None if smaller is None else Payload(self.kind, message=smaller)


def _split_spans_request(request: ExportTraceServiceRequest) -> Optional[Tuple[ExportTraceServiceRequest, ExportTraceServiceRequest]]:
    """Two requests with the first and second half of the spans, resource and scope kept."""
    total = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
    if total < 2:
        return None
    first_count = (total + 1) // 2
    halves = (ExportTraceServiceRequest(), ExportTraceServiceRequest())
    seen = 0
    for resource in request.resource_spans:
        resource_copies: Dict[int, Any] = {}
        for scope in resource.scope_spans:
            scope_copies: Dict[int, Any] = {}
            for span in scope.spans:
                half = 0 if seen < first_count else 1
                seen += 1
                if half not in scope_copies:
                    if half not in resource_copies:
                        target = halves[half].resource_spans.add()
                        target.resource.CopyFrom(resource.resource)
                        target.schema_url = resource.schema_url
                        resource_copies[half] = target
                    scope_copy = resource_copies[half].scope_spans.add()
                    scope_copy.scope.CopyFrom(scope.scope)
                    scope_copy.schema_url = scope.schema_url
                    scope_copies[half] = scope_copy
                scope_copies[half].spans.add().CopyFrom(span)
    return halves


def _truncate_spans_request(request: ExportTraceServiceRequest, max_bytes: int) -> Optional[ExportTraceServiceRequest]:
    """Cut the largest string/bytes attribute values (span and event attributes, nested
    ones included) of a request, largest first, until it fits ``max_bytes``.

    Names, ids, links and the Opik linkage attributes are never touched. Each cut value
    ends with :func:`~opik_otel.sizing.truncation_marker`.
    """
    result = ExportTraceServiceRequest()
    result.CopyFrom(request)
    excess = result.ByteSize() - max_bytes
    if excess <= 0:
        return None
    leaves: List[Tuple[int, Any, bool]] = []
    for resource in result.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                for pair in span.attributes:
                    if pair.key not in PROTECTED_ATTRIBUTES:
                        _collect_any_leaves(pair.value, leaves, 0)
                for event in span.events:
                    for pair in event.attributes:
                        if pair.key not in PROTECTED_ATTRIBUTES:
                            _collect_any_leaves(pair.value, leaves, 0)
    changed = False
    for _size, value, is_text in sorted(leaves, key=lambda leaf: leaf[0], reverse=True):
        if excess <= 0:
            break
        original = value.string_value.encode("utf-8") if is_text else value.bytes_value
        cut = _cut_bytes(original, excess, is_text)
        if cut is None:
            continue
        head, saved = cut
        if is_text:
            value.string_value = head.decode("utf-8")
        else:
            value.bytes_value = head
        excess -= saved
        changed = True
    return result if changed else None


def _collect_any_leaves(value: Any, leaves: List[Tuple[int, Any, bool]], depth: int) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        leaves.append((len(value.string_value), value, True))
    elif kind == "bytes_value":
        leaves.append((len(value.bytes_value), value, False))
    elif depth < _MAX_JSON_DEPTH and kind == "array_value":
        for item in value.array_value.values:
            _collect_any_leaves(item, leaves, depth + 1)
    elif depth < _MAX_JSON_DEPTH and kind == "kvlist_value":
        for pair in value.kvlist_value.values:
            _collect_any_leaves(pair.value, leaves, depth + 1)


def _cut_bytes(original: bytes, excess: int, is_text: bool) -> Optional[Tuple[bytes, int]]:
    """``original`` cut to save about ``excess`` bytes, marker included, and the bytes
    saved for sure; None when cutting would not save anything.

    A value cut before (a 413 answered to an already truncated span) keeps one marker
    that counts everything cut from the original value.
    """
    content, previously = _strip_marker(original)
    marker_budget = len(truncation_marker(previously + len(content)).encode("utf-8"))
    keep = min(len(content), max(0, len(original) - excess - marker_budget))
    if is_text:
        while keep > 0 and keep < len(content) and content[keep] & 0xC0 == 0x80:
            keep -= 1  # never split a UTF-8 character
    marker = truncation_marker(previously + len(content) - keep).encode("utf-8")
    saved = len(original) - keep - len(marker)
    if saved <= 0:
        return None
    return content[:keep] + marker, saved


def _strip_marker(value: bytes) -> Tuple[bytes, int]:
    """``value`` without a truncation marker at its end, and the bytes that marker counts."""
    match = _MARKER_AT_END(value)
    if match is None:
        return value, 0
    return value[: match.start()], int(match.group(1))


def _truncate_rows_document(document: Mapping[str, Any], max_bytes: int) -> Optional[Dict[str, Any]]:
    """Cut the largest strings of a single trace row's input, output, metadata and
    error info until the JSON body fits ``max_bytes``; ids, name and times are kept."""
    rows = document.get("traces")
    if not isinstance(rows, list) or len(rows) != 1 or not isinstance(rows[0], dict):
        return None
    result = {**document, "traces": [copy.deepcopy(rows[0])]}
    row = result["traces"][0]
    size = len(dump_json(result).encode("utf-8"))
    if size <= max_bytes:
        return None
    changed = False
    for _round in range(3):
        leaves: List[Tuple[Any, Any, str]] = []
        for field in _ROW_TRUNCATABLE_FIELDS:
            if field in row:
                _collect_json_leaves(row, field, leaves, 0)
        for container, key, text in sorted(leaves, key=lambda leaf: len(leaf[2]), reverse=True):
            excess = size - max_bytes
            if excess <= 0:
                return result
            content_bytes, previously = _strip_marker(text.encode("utf-8", "surrogatepass"))
            content = content_bytes.decode("utf-8", "surrogatepass")
            encoded = len(json.dumps(text))
            marker_budget = len(json.dumps(truncation_marker(previously + len(content_bytes))))
            if encoded <= marker_budget + 2:
                continue
            # Escapes make a character cost more than one byte; cut in proportion.
            keep = min(len(content), max(0, int(len(text) * (encoded - excess - marker_budget) / encoded)))
            if keep >= len(content) and not previously:
                continue
            cut = content[keep:].encode("utf-8", "surrogatepass")
            container[key] = content[:keep] + truncation_marker(previously + len(cut))
            changed = True
            size = len(dump_json(result).encode("utf-8"))
        if size <= max_bytes:
            break
    return result if changed else None


def _collect_json_leaves(container: Any, key: Any, leaves: List[Tuple[Any, Any, str]], depth: int) -> None:
    value = container[key]
    if isinstance(value, str):
        leaves.append((container, key, value))
    elif depth < _MAX_JSON_DEPTH and isinstance(value, dict):
        for inner in list(value):
            _collect_json_leaves(value, inner, leaves, depth + 1)
    elif depth < _MAX_JSON_DEPTH and isinstance(value, list):
        for index in range(len(value)):
            _collect_json_leaves(value, index, leaves, depth + 1)


def dump_json(document: Any) -> str:
    """JSON Opik's Java backend parses: no NaN/Infinity, anything odd as a string."""
    try:
        return json.dumps(document, allow_nan=False, default=str)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_json_safe(document, 0), allow_nan=False, default=str)


def _json_safe(value: Any, depth: int) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if depth >= _MAX_JSON_DEPTH:
        return str(value)
    if isinstance(value, dict):
        return {str(key): _json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, depth + 1) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --- making spans sendable ------------------------------------------------------------
