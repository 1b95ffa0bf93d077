"""Make batches fit under Opik's request size limit (HTTP 413, contract §1).

Two tools for the exporter: halve a batch that is too large, and shrink a single span that is too
large on its own by truncating its biggest attribute values (base64 images, long documents).
Sizes are measured as the OTLP protobuf encoding of the spans, before any gzip.
"""

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import Event, ReadableSpan

from opik_otel.attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from opik_otel.spans import copy_span

T = TypeVar("T")

# Opik needs these verbatim to place the span; a truncated id would orphan it.
PROTECTED_ATTRIBUTES = frozenset({OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID})

_MARKER = "…[truncated {} bytes by opik_otel]"

# A location of one string/bytes leaf: which attribute set (None = the span's own, an int = that
# event's), the attribute key, then indices/keys into nested sequences and mappings.
_Path = Tuple[Any, ...]
_Leaf = Union[str, bytes]


def split_in_halves(items: Sequence[T]) -> Tuple[List[T], List[T]]:
    """Split ``items`` into two halves, keeping order; the first half gets the odd item.

    A single item comes back as ``([item], [])``: a caller that still gets 413 for one span has to
    truncate it (:func:`truncate_span`) rather than split further.
    """
    middle = (len(items) + 1) // 2
    return list(items[:middle]), list(items[middle:])


def encoded_size(spans: Iterable[ReadableSpan]) -> int:
    """Size in bytes of ``spans`` encoded as one OTLP ``ExportTraceServiceRequest`` protobuf."""
    batch = list(spans)
    if not batch:
        return 0
    return encode_spans(batch).ByteSize()


def truncation_marker(dropped_bytes: int) -> str:
    """The suffix appended to a value that lost ``dropped_bytes`` bytes (UTF-8) at its end."""
    return _MARKER.format(dropped_bytes)


@dataclass
class _Candidate:
    path: _Path
    original: bytes
    is_text: bool


def truncate_span(span: ReadableSpan, max_bytes: int) -> ReadableSpan:
    """A copy of ``span`` whose largest string/bytes attribute values are cut until it fits.

    Values of the span's attributes and of its events' attributes, including strings inside
    sequences and mappings, are truncated largest first, each just enough, until the encoded size
    (:func:`encoded_size`) is at most ``max_bytes``, or every value is down to its marker (then the
    result is as small as truncation can make it and may still exceed ``max_bytes``). Each cut
    value ends with :func:`truncation_marker`. The name, ids, parent, Opik linkage attributes
    (:data:`PROTECTED_ATTRIBUTES`), links, resource and scope are never changed. Strings are cut on
    a UTF-8 character boundary. ``span`` itself is returned when it already fits.
    """
    size = encoded_size([span])
    if size <= max_bytes:
        return span
    candidates = _collect_candidates(span)
    # Every cut shrinks the value and hence every enclosing length prefix, so the saving counted
    # here is a lower bound of the real one: once the estimate fits, the span fits, and the span is
    # encoded only twice however many values get cut.
    excess = size - max_bytes
    replacements: Dict[_Path, _Leaf] = {}
    for candidate in sorted(candidates, key=lambda c: len(c.original), reverse=True):
        if excess <= 0:
            break
        cut = _cut(candidate, excess)
        if cut is None:
            continue
        value, saved = cut
        replacements[candidate.path] = value
        excess -= saved
    if not replacements:
        return span
    return _rebuild(span, replacements)


def _collect_candidates(span: ReadableSpan) -> List[_Candidate]:
    found: List[_Candidate] = []
    for key, value in (span.attributes or {}).items():
        if key not in PROTECTED_ATTRIBUTES:
            _collect_leaves((None, key), value, found)
    for index, event in enumerate(span.events):
        for key, value in (event.attributes or {}).items():
            if key not in PROTECTED_ATTRIBUTES:
                _collect_leaves((index, key), value, found)
    return found


def _collect_leaves(path: _Path, value: Any, found: List[_Candidate]) -> None:
    if isinstance(value, str):
        found.append(_Candidate(path, value.encode("utf-8", "surrogatepass"), True))
    elif isinstance(value, bytes):
        found.append(_Candidate(path, value, False))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect_leaves(path + (key,), item, found)
    elif isinstance(value, Sequence):
        for index, item in enumerate(value):
            _collect_leaves(path + (index,), item, found)


def _cut(candidate: _Candidate, excess: int) -> Optional[Tuple[_Leaf, int]]:
    """The truncated value saving about ``excess`` bytes, and the bytes it saves for sure."""
    original = candidate.original
    # The marker's own length depends on the number it shows; the longest possible one keeps the
    # saving estimate conservative.
    marker_budget = len(truncation_marker(len(original)).encode("utf-8"))
    keep = max(0, len(original) - excess - marker_budget)
    if candidate.is_text:
        # Never split a multi-byte character: back up to the start of the one being cut.
        while keep > 0 and original[keep] & 0xC0 == 0x80:
            keep -= 1
    marker = truncation_marker(len(original) - keep).encode("utf-8")
    saved = len(original) - keep - len(marker)
    if saved <= 0:
        return None
    head = original[:keep] + marker
    if candidate.is_text:
        return head.decode("utf-8", "surrogatepass"), saved
    return head, saved


def _rebuild(span: ReadableSpan, replacements: Mapping[_Path, _Leaf]) -> ReadableSpan:
    by_owner: Dict[Any, Dict[_Path, _Leaf]] = {}
    for path, value in replacements.items():
        by_owner.setdefault(path[0], {})[path[1:]] = value

    attributes = None
    if None in by_owner:
        attributes = _copy_attributes(
            span.attributes, by_owner[None], span.dropped_attributes
        )
    events: Sequence[Event] = list(span.events)
    for index, event in enumerate(span.events):
        if index in by_owner:
            events[index] = Event(  # type: ignore[index]
                event.name,
                _copy_attributes(event.attributes, by_owner[index], event.dropped_attributes),
                event.timestamp,
            )
    return copy_span(span, attributes=attributes, events=events)


def _copy_attributes(
    attributes: Optional[Mapping[str, Any]],
    replacements: Mapping[_Path, _Leaf],
    dropped: int,
) -> BoundedAttributes:
    values = dict(attributes or {})
    for path, leaf in replacements.items():
        key, rest = path[0], path[1:]
        values[key] = _replace_at(values[key], rest, leaf)
    copy = BoundedAttributes(attributes=values, immutable=True)
    # The exporter reports how many attributes the SDK dropped; a copy must not reset that.
    copy.dropped = dropped
    return copy


def _replace_at(value: Any, path: _Path, leaf: _Leaf) -> Any:
    if not path:
        return leaf
    head, rest = path[0], path[1:]
    if isinstance(value, Mapping):
        updated = dict(value)
        updated[head] = _replace_at(value[head], rest, leaf)
        return updated
    items = list(value)
    items[head] = _replace_at(items[head], rest, leaf)
    return tuple(items)

