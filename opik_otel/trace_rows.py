"""Build Opik REST ``TraceWrite`` rows (contract §5) from finished OTel root spans.

Opik's backend never creates the trace row for a trace id that arrived in
``opik.trace_id`` (contract §3), so whoever minted that id must write the row through
``POST {base}/v1/private/traces/batch``. The row copies what the backend would have
taken from the root span (contract §2, §4): name, times, input, output, tags, metadata,
thread id and error info.

Everything here is pure: no I/O, no state. Attribute values come from arbitrary
instrumentation, so odd values (bad JSON, NaN, bytes, nested sequences) are converted
or kept raw, never raised on.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from opik_otel.attributes import OPIK_TRACE_ID
from opik_otel.ids import canonical_uuid_v7
from opik_otel.linkage import may_hold_items, span_attributes
from opik_otel.repairs import repaired_text

OPIK_TAGS = "opik.tags"
OPIK_METADATA = "opik.metadata"
OPIK_METADATA_PREFIX = "opik.metadata."

# First match wins, as in Opik's backend (contract §4).
THREAD_ID_ATTRIBUTES = ("thread_id", "gen_ai.conversation.id", "session.id")

INPUT_PREFIXES = ("input", "gen_ai.prompt", "gen_ai.input.", "gen_ai.request.")
OUTPUT_PREFIXES = ("output", "gen_ai.completion", "gen_ai.output.", "gen_ai.response")

EXCEPTION_EVENT = "exception"
DEFAULT_EXCEPTION_TYPE = "Exception"
STATUS_ERROR_TYPE = "Error"

# Past this depth a value is stringified: deeper structures are almost certainly
# accidental and would risk RecursionError while converting them.
_MAX_DEPTH = 32


class _TooDeep(Exception):
    """A value nests deeper than ``_MAX_DEPTH``."""


def trace_rows_request_body(rows: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
    """Wrap trace rows in the body ``POST /v1/private/traces/batch`` expects."""
    return {"traces": [dict(row) for row in rows]}


def trace_row_from_span(
    span: ReadableSpan,
    *,
    attributes: Optional[Mapping[str, Any]] = None,
    project_name: Optional[str],
    tags: Sequence[str] = (),
    metadata: Optional[Mapping[str, Any]] = None,
    thread_id: Optional[str] = None,
) -> Dict[str, Any]:
    """Build the ``TraceWrite`` JSON object for the trace whose root is ``span``.

    Args:
        span: A finished root span carrying its Opik trace id in ``opik.trace_id``.
        attributes: the span's attributes as they are sent, when they differ from
            ``span``'s own (default: ``span``'s).
        project_name: Opik project; ``None`` leaves it to the backend's default.
        tags: Tags from the exporter's configuration, listed before the span's own.
        metadata: Metadata from the exporter's configuration; the span's values win.
        thread_id: Thread (conversation) id; overrides the span's thread attributes.

    Returns:
        A JSON-serialisable dict; keys whose value would be ``None`` are omitted.

    Raises:
        ValueError: the span has no valid ``opik.trace_id`` or no start time, so no
            row can be written for it.
    """
    if attributes is None:
        attributes = span_attributes(span)
    trace_id = canonical_uuid_v7(attributes.get(OPIK_TRACE_ID))
    if trace_id is None:
        raise ValueError(f"span {span.name!r} has no valid UUIDv7 {OPIK_TRACE_ID} attribute; no trace row can be built")
    if span.start_time is None:
        raise ValueError(f"span {span.name!r} has no start time; no trace row can be built")

    start_time = format_timestamp(span.start_time)
    end = span.end_time
    span_tags = attributes.get(OPIK_TAGS)
    inputs, outputs, metadata_keys = _io_and_metadata_keys(attributes)
    row: Dict[str, Any] = {
        "id": trace_id,
        "project_name": project_name,
        "name": repaired_text(span.name),
        "start_time": start_time,
        "end_time": None if end is None else _later_timestamp(start_time, span.start_time, end),
        "input": inputs,
        "output": outputs,
        "metadata": _merged_metadata(metadata, attributes.get(OPIK_METADATA), metadata_keys),
        "tags": merge_tags(tags, span_tags) if tags or span_tags is not None else None,
        "thread_id": _clean_thread_id(thread_id) or thread_id_from_attributes(attributes),
        "error_info": error_info_from_span(span),
    }
    return {key: value for key, value in row.items() if value is not None}


def _io_and_metadata_keys(
    attributes: Mapping[str, Any],
) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]], Dict[str, Any]]:
    """A root span's input and output attributes (``None`` if it has none), and its
    ``opik.metadata.<key>`` attributes, from one pass over its attributes."""
    inputs: Dict[str, Any] = {}
    outputs: Dict[str, Any] = {}
    metadata: Dict[str, Any] = {}
    for key, value in attributes.items():
        if not isinstance(key, str):
            continue
        if key.startswith(INPUT_PREFIXES):
            inputs[key] = _parse_structured(value)
        elif key.startswith(OUTPUT_PREFIXES):
            outputs[key] = _parse_structured(value)
        elif key.startswith(OPIK_METADATA_PREFIX):
            metadata[key] = value
    return inputs or None, outputs or None, metadata


def _later_timestamp(earlier_text: str, earlier: int, later: int) -> str:
    """``format_timestamp(later)``, reusing ``earlier``'s text within the same second
    (most roots end in the second they started)."""
    if later // 1_000_000_000 == earlier // 1_000_000_000:
        return "%s%06dZ" % (earlier_text[:-7], later % 1_000_000_000 // 1000)
    return format_timestamp(later)


def format_timestamp(nanoseconds: int) -> str:
    """Render Unix nanoseconds as ISO-8601 UTC with microseconds and ``Z``.

    Integer arithmetic keeps the microseconds exact; a float detour would round.
    ``time.gmtime`` and one format: a root span's row needs two of these, and
    ``datetime.strftime`` costs several times more.
    """
    seconds, remainder = divmod(int(nanoseconds), 1_000_000_000)
    moment = time.gmtime(seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
        moment.tm_year,
        moment.tm_mon,
        moment.tm_mday,
        moment.tm_hour,
        moment.tm_min,
        moment.tm_sec,
        remainder // 1000,
    )


def merge_tags(configured: Iterable[Any], span_tags: Any) -> Optional[List[str]]:
    """Union of configured tags and the span's ``opik.tags``, de-duplicated, order kept.

    Returns ``None`` when there are no tags so the key can be omitted.
    """
    merged: List[str] = []
    # A lone string is one tag specification, not a sequence of characters.
    configured_list = configured if isinstance(configured, (str, bytes)) else list(configured or ())
    for tag in [*_tag_list(configured_list), *_tag_list(span_tags)]:
        if tag not in merged:
            merged.append(tag)
    return merged or None


def _tag_list(value: Any) -> List[str]:
    """Read ``opik.tags`` in any of its three forms (contract §4) as clean strings."""
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            parsed = _loads_or_none(text)
            if isinstance(parsed, list):
                value = parsed
            else:
                # Not valid JSON after all: a comma-separated string that happens to
                # start with a bracket.
                value = text.split(",")
        else:
            value = text.split(",")
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)
    if not isinstance(value, (list, tuple)):
        value = [value]
    tags = []
    for item in value:
        if item is None:
            continue
        tag = item if isinstance(item, str) else json.dumps(_json_safe_or_str(item))
        tag = tag.strip()
        if tag:
            tags.append(tag)
    return tags


def merge_metadata(configured: Optional[Mapping[str, Any]], attributes: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """Configured metadata, then ``opik.metadata`` (JSON object), then ``opik.metadata.<key>``.

    Later sources win. ``opik.metadata.<key>`` attributes keep their full key, as Opik's
    backend stores them. An ``opik.metadata`` value that is not a JSON object is kept
    raw under its own key rather than lost.
    """
    prefixed = {
        key: value for key, value in attributes.items() if isinstance(key, str) and key.startswith(OPIK_METADATA_PREFIX)
    }
    return _merged_metadata(configured, attributes.get(OPIK_METADATA), prefixed)


def _merged_metadata(
    configured: Optional[Mapping[str, Any]], blob: Any, prefixed: Mapping[str, Any]
) -> Optional[Dict[str, Any]]:
    merged: Dict[str, Any] = {}
    for key, value in (configured or {}).items():
        merged[str(key)] = _json_safe_or_str(value)
    if blob is not None:
        parsed = _loads_or_none(blob) if isinstance(blob, str) else None
        if isinstance(parsed, dict):
            merged.update(_json_safe_or_str(parsed))
        else:
            merged[OPIK_METADATA] = _json_safe_or_str(blob)
    for key, value in prefixed.items():
        merged[key] = _json_safe_or_str(value)
    return merged or None


def thread_id_from_attributes(attributes: Mapping[str, Any]) -> Optional[str]:
    """The first usable thread attribute (contract §4); integers become strings."""
    for key in THREAD_ID_ATTRIBUTES:
        found = _clean_thread_id(attributes.get(key))
        if found is not None:
            return found
    return None


def _clean_thread_id(value: Any) -> Optional[str]:
    # bool is an int subclass, but True is no conversation id.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def error_info_from_span(span: ReadableSpan) -> Optional[Dict[str, str]]:
    """Opik ``ErrorInfo`` from the last ``exception`` event, else from an ERROR status.

    Opik requires ``exception_type`` and ``traceback``; they get stand-in values
    when the span does not carry them.
    """
    events = span.events if may_hold_items(getattr(span, "_events", True)) else ()
    for event in reversed(tuple(events or ())):
        if event.name != EXCEPTION_EVENT:
            continue
        event_attributes: Mapping[str, Any] = event.attributes or {}
        info = {
            "exception_type": _text(event_attributes.get("exception.type")) or DEFAULT_EXCEPTION_TYPE,
            "message": _text(event_attributes.get("exception.message")),
            "traceback": _text(event_attributes.get("exception.stacktrace")) or "",
        }
        return {key: value for key, value in info.items() if value is not None}
    status = span.status
    if status is not None and status.status_code is StatusCode.ERROR:
        message = repaired_text(status.description) if status.description else None
        info = {"exception_type": STATUS_ERROR_TYPE, "message": message, "traceback": ""}
        return {key: value for key, value in info.items() if value is not None}
    return None


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        return repaired_text(value)
    return json.dumps(_json_safe_or_str(value))


def _parse_structured(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        parsed = _loads_or_none(value)
        if parsed is not None:
            return parsed
    return _json_safe_or_str(value)


def _loads_or_none(text: str) -> Any:
    """Parse JSON into JSON-safe data, or ``None`` when it is not usable JSON."""
    try:
        return _json_safe(json.loads(text), 0)
    # Untrusted text: malformed, too deep (RecursionError) or anything else means
    # "use the raw value instead".
    except Exception:
        return None


def _json_safe_or_str(value: Any) -> Any:
    try:
        return _json_safe(value, 0)
    except _TooDeep:
        return "<value nested too deeply>"


def _json_safe(value: Any, depth: int) -> Any:
    """Convert ``value`` into data ``json.dumps`` accepts and Opik's backend can parse.

    Tuples and sets become lists, bytes are decoded, non-finite floats (which would
    produce invalid JSON) become strings, and unknown objects use ``str``.
    """
    if depth > _MAX_DEPTH:
        raise _TooDeep()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_json_safe(item, depth + 1) for item in items]
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
