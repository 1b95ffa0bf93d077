"""Making one span or trace row fit under a request size limit (HTTP 413, contract §1).

When splitting a request cannot help (it holds one span or one trace row), its largest
values are cut, largest first, each just enough, with a marker saying how much went:
strings and bytes keep their beginning; values of any other type that are still too
large (arrays of numbers, many short strings, maps) are replaced by the marker as a
whole. Names, ids, links and the Opik linkage attributes are never touched.
"""

import copy
import json
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from .jsontext import dump_json

# Opik needs these verbatim to place the span; a truncated id would orphan it.
PROTECTED_ATTRIBUTES = frozenset({OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID})

_MARKER = "…[truncated {} bytes by opik_otel]"
_ROW_TRUNCATABLE_FIELDS = ("input", "output", "metadata", "error_info")
_MAX_JSON_DEPTH = 64


def truncation_marker(dropped_bytes: int) -> str:
    """The suffix appended to a value that lost ``dropped_bytes`` bytes (UTF-8) at its end."""
    return _MARKER.format(dropped_bytes)


_MARKER_AT_END = re.compile(
    re.escape(truncation_marker(0).encode("utf-8")).replace(b"0", rb"(\d+)") + rb"\Z", re.DOTALL
).search


def truncate_spans_request(request: ExportTraceServiceRequest, max_bytes: int) -> Optional[ExportTraceServiceRequest]:
    """A copy of ``request`` cut until it fits ``max_bytes``, or ``None`` when nothing
    could be cut.

    First the largest string/bytes values (span and event attributes, nested ones
    included) lose their end, largest first; if that is not enough, whole attribute
    values of any type (arrays of numbers, many short strings, maps) are replaced by a
    marker, largest first. Each cut value ends with :func:`truncation_marker`.
    """
    result = ExportTraceServiceRequest()
    result.CopyFrom(request)
    excess = result.ByteSize() - max_bytes
    if excess <= 0:
        return None
    values = _attribute_values(result)
    leaves: List[Tuple[int, Any, bool]] = []
    for value in values:
        _collect_any_leaves(value, leaves, 0)
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
    if excess > 0:
        excess, replaced = _replace_whole_values(values, excess)
        changed = changed or replaced
    return result if changed else None


def _attribute_values(request: ExportTraceServiceRequest) -> List[Any]:
    """The ``AnyValue`` of every span and event attribute that may be cut."""
    found: List[Any] = []
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                found.extend(pair.value for pair in span.attributes if pair.key not in PROTECTED_ATTRIBUTES)
                for event in span.events:
                    found.extend(pair.value for pair in event.attributes if pair.key not in PROTECTED_ATTRIBUTES)
    return found


def _replace_whole_values(values: List[Any], excess: int) -> Tuple[int, bool]:
    """Replace the largest values by a marker until ``excess`` bytes are saved."""
    replaced = False
    # Strings and bytes were cut already, keeping their beginning; the rest goes whole.
    others = [value for value in values if value.WhichOneof("value") not in ("string_value", "bytes_value")]
    for size, value in sorted(((value.ByteSize(), value) for value in others), key=lambda item: item[0], reverse=True):
        if excess <= 0:
            break
        marker = truncation_marker(size)
        # A varint length prefix of the value shrinks too; not counting it keeps the estimate safe.
        saved = size - len(marker.encode("utf-8")) - 2
        if saved <= 0:
            break
        value.Clear()
        value.string_value = marker
        excess -= saved
        replaced = True
    return excess, replaced


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


def truncate_rows_document(document: Mapping[str, Any], max_bytes: int) -> Optional[Dict[str, Any]]:
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
