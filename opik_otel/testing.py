"""An embedded, in-process stand-in for Opik's ingest API, for tests and demos.

:class:`LocalOpik` runs a small HTTP server on ``127.0.0.1`` that accepts what Opik's
backend accepts (OTLP/HTTP traces, and the REST trace/span batch endpoints), maps the
data the way the backend does (ids, thread, tags, metadata, input/output, errors) and
keeps everything in memory so a test can ask "which traces, spans and orphans would
Opik show?"::

    with LocalOpik() as opik:
        exporter = OTLPSpanExporter(endpoint=opik.otlp_traces_endpoint)
        ...
        assert opik.wait_for_spans(2)
        print(opik.tree(opik.traces()[0].id))
        assert not opik.orphans()

It also injects faults (error statuses with ``Retry-After``, refused connections, slow
responses, body-size limits) so retry and buffering code can be exercised for real.

Run ``python -m opik_otel.testing`` to get a throw-away server in a terminal; Ctrl-C
prints every trace it received.
"""

import argparse
import base64
import copy
import dataclasses
import gzip
import hashlib
import json
import sys
import threading
import time
import zlib
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)
from urllib.parse import urlsplit

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from opik_otel.attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from opik_otel.ids import canonical_uuid_v7, format_uuid, generate_id, uuid_v7_int

__all__ = [
    "DEFAULT_PROJECT",
    "DEFAULT_WORKSPACE",
    "LocalOpik",
    "MappedAttributes",
    "RequestRecord",
    "ResolvedIds",
    "SpanRecord",
    "TraceRecord",
    "derived_uuid_v7",
    "main",
    "map_attributes",
    "otlp_json_to_request",
    "parse_tags",
    "render_tree",
    "resolve_span_ids",
]

DEFAULT_PROJECT = "Default Project"
DEFAULT_WORKSPACE = "default"
# The backend's own limit on the wire; Opik Cloud is stricter (contract §1).
DEFAULT_MAX_BODY_BYTES = 512 * 1024 * 1024

API_PREFIX = "/api"
OTLP_TRACES_PATH = "/api/v1/private/otel/v1/traces"
OTLP_METRICS_PATH = "/api/v1/private/otel/v1/metrics"
# The Opik SDK checks this before flushing and at exit.
HEALTH_PATH = "/api/is-alive/ping"
TRACES_BATCH_PATH = "/api/v1/private/traces/batch"
SPANS_BATCH_PATH = "/api/v1/private/spans/batch"
_WRITE_PATHS = (OTLP_TRACES_PATH, TRACES_BATCH_PATH, SPANS_BATCH_PATH)

_ID_KEYS = frozenset({OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID})
_THREAD_KEYS = ("thread_id", "gen_ai.conversation.id", "session.id")
_MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model")
_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
_USAGE_PREFIX = "gen_ai.usage."
_USAGE_RENAMES = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}
_OUTPUT_PREFIXES = ("output", "gen_ai.completion", "gen_ai.output.", "gen_ai.response")
_INPUT_PREFIXES = ("input", "gen_ai.prompt", "gen_ai.input.", "gen_ai.request.")
_OTLP_JSON_ID_FIELDS = frozenset(
    {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
)
# Header names whose values must never reach a log, a repr or a request record.
_SECRET_HEADER_MARKERS = ("authorization", "cookie", "key", "token", "secret", "password")
_DRAIN_LIMIT = 1024 * 1024 * 1024


# --------------------------------------------------------------------------- records


@dataclasses.dataclass
class TraceRecord:
    """A trace row as Opik would store it."""

    id: str
    name: Optional[str]
    project_name: str
    workspace: str
    start_time: Optional[str]
    end_time: Optional[str]
    input: Any = None
    output: Any = None
    metadata: Any = None
    tags: List[str] = dataclasses.field(default_factory=list)
    thread_id: Optional[str] = None
    error_info: Optional[Dict[str, Any]] = None
    source: str = "rest"
    """``'otel-root'`` (created from an OTel root span) or ``'rest'`` (traces/batch)."""
    root_span_id: Optional[str] = None
    environment: Optional[str] = None


@dataclasses.dataclass
class SpanRecord:
    """A span row as Opik would store it, plus the OTel data it came from."""

    id: str
    trace_id: str
    parent_span_id: Optional[str]
    name: Optional[str]
    project_name: str
    workspace: str
    start_time: Optional[str]
    end_time: Optional[str]
    type: str = "general"
    input: Dict[str, Any] = dataclasses.field(default_factory=dict)
    output: Dict[str, Any] = dataclasses.field(default_factory=dict)
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)
    tags: List[str] = dataclasses.field(default_factory=list)
    usage: Dict[str, Any] = dataclasses.field(default_factory=dict)
    total_cost: Any = None
    model: Optional[str] = None
    provider: Optional[str] = None
    error_info: Optional[Dict[str, Any]] = None
    thread_id: Optional[str] = None
    source: str = "otel"
    """``'otel'`` (OTLP ingest) or ``'rest'`` (spans/batch)."""
    attributes: Dict[str, Any] = dataclasses.field(default_factory=dict)
    """The raw OTel span attributes, ``opik.*`` ids included."""
    otel_trace_id: Optional[str] = None
    otel_span_id: Optional[str] = None
    otel_parent_span_id: Optional[str] = None
    start_time_unix_nano: Optional[int] = None
    end_time_unix_nano: Optional[int] = None


@dataclasses.dataclass
class RequestRecord:
    """One HTTP request the server answered (secret header values replaced by ``***``)."""

    method: str
    path: str
    headers: Dict[str, str]
    content_type: Optional[str]
    content_encoding: Optional[str]
    body_size: int
    status: int
    project: str
    workspace: str
    injected: bool = False
    """True when the status came from :meth:`LocalOpik.fail_next`."""
    error: Optional[str] = None
    received_at: float = 0.0


@dataclasses.dataclass
class MappedAttributes:
    """What the backend makes of one span's attributes (contract §4)."""

    input: Dict[str, Any] = dataclasses.field(default_factory=dict)
    output: Dict[str, Any] = dataclasses.field(default_factory=dict)
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)
    tags: List[str] = dataclasses.field(default_factory=list)
    thread_id: Optional[str] = None
    usage: Dict[str, Any] = dataclasses.field(default_factory=dict)
    total_cost: Any = None
    model: Optional[str] = None
    provider: Optional[str] = None
    warnings: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ResolvedIds:
    """The Opik ids chosen for one OTel span (contract §2–3)."""

    trace_id: str
    span_id: str
    parent_span_id: Optional[str]
    is_root: bool
    """No OTel parent and no explicit ``opik.trace_id``: the span creates the trace row."""
    explicit_trace: bool
    warnings: List[str] = dataclasses.field(default_factory=list)


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------ pure helpers: ids


def derived_uuid_v7(timestamp_ms: int, otel_id: bytes) -> str:
    """Build the deterministic UUIDv7 the backend derives from an OTel trace or span id.

    The timestamp fills the 48-bit time field; the first 10 bytes of SHA-256 of the raw
    OTel id supply the random part. A UUIDv7 has only 74 random bits, so the 6 lowest of
    the 80 hash bits are dropped.
    """
    digest = hashlib.sha256(otel_id).digest()[:10]
    return format_uuid(uuid_v7_int(timestamp_ms, int.from_bytes(digest, "big") >> 6))


def _valid_opik_id(attributes: Mapping[str, Any], key: str, warnings: List[str]) -> Optional[str]:
    if key not in attributes:
        return None
    value = attributes[key]
    canonical = canonical_uuid_v7(value)
    if canonical is None:
        warnings.append(f"ignored {key}={value!r}: not a UUIDv7 string")
    return canonical


def resolve_span_ids(
    attributes: Mapping[str, Any],
    *,
    derived_trace_id: str,
    trace_timestamp_ms: int,
    otel_span_id: bytes,
    otel_parent_span_id: bytes,
) -> ResolvedIds:
    """Choose a span's Opik trace, span and parent ids the way the backend does.

    ``derived_trace_id`` / ``trace_timestamp_ms`` are the ids derived for the span's
    OTel trace (§2); the ``opik.*`` attributes override them following §3.
    """
    warnings: List[str] = []
    trace_id = _valid_opik_id(attributes, OPIK_TRACE_ID, warnings)
    span_id = _valid_opik_id(attributes, OPIK_SPAN_ID, warnings)
    parent_id = _valid_opik_id(attributes, OPIK_PARENT_SPAN_ID, warnings)
    has_otel_parent = bool(otel_parent_span_id.strip(b"\0"))
    if span_id is None:
        span_id = derived_uuid_v7(trace_timestamp_ms, otel_span_id)
    if trace_id is not None:
        # An explicit trace wins outright: the OTel parent is meaningless in that trace.
        return ResolvedIds(trace_id, span_id, parent_id, False, True, warnings)
    if parent_id is not None:
        warnings.append(f"ignored {OPIK_PARENT_SPAN_ID}: no valid {OPIK_TRACE_ID} on the span")
    derived_parent = (
        derived_uuid_v7(trace_timestamp_ms, otel_parent_span_id) if has_otel_parent else None
    )
    return ResolvedIds(
        derived_trace_id, span_id, derived_parent, not has_otel_parent, False, warnings
    )


# ------------------------------------------------------------- pure helpers: decoding


def _hex_ids_to_base64(node: Any) -> Any:
    # OTLP/JSON spells trace and span ids in hex, protobuf's JSON mapping expects base64.
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _OTLP_JSON_ID_FIELDS and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    pass  # not hex: leave it for the protobuf parser to reject
            else:
                value = _hex_ids_to_base64(value)
            out[key] = value
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def otlp_json_to_request(data: Union[bytes, str]) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON trace export body (hex ids) into the protobuf message.

    Raises ``ValueError`` or ``google.protobuf.json_format.ParseError`` when the body is
    not valid OTLP/JSON.
    """
    document = json.loads(data)
    message = ExportTraceServiceRequest()
    json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
    return message


def _decode_content(body: bytes, encoding: Optional[str]) -> bytes:
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise _HttpError(500, f"cannot decompress gzip body: {exc}") from exc
    raise _HttpError(415, f"unsupported Content-Encoding {encoding!r} (use gzip or none)")


def _media_type(headers: Mapping[str, str]) -> str:
    return (headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _parse_otlp(data: bytes, media_type: str) -> ExportTraceServiceRequest:
    if media_type == "application/x-protobuf":
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(data)
        except Exception as exc:  # protobuf raises DecodeError, sometimes others
            raise _HttpError(500, f"unparsable protobuf body: {exc}") from exc
        return message
    if media_type == "application/json":
        try:
            return otlp_json_to_request(data)
        except Exception as exc:
            raise _HttpError(500, f"unparsable OTLP/JSON body: {exc}") from exc
    raise _HttpError(
        415, f"unsupported Content-Type {media_type!r}: use application/x-protobuf or application/json"
    )


def _any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def _attributes(kvs: Sequence[KeyValue]) -> Dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _iso_from_unix_nano(nanos: int) -> Optional[str]:
    if not nanos:
        return None
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=nanos // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalize_iso(value: Any) -> str:
    # One spelling for every timestamp so records compare and sort as plain strings.
    if not isinstance(value, str):
        raise ValueError(f"not an ISO-8601 string: {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------ pure helpers: mapping


def parse_tags(value: Any) -> List[str]:
    """Read ``opik.tags``: a string array, a JSON-array string or a comma-separated string."""
    if isinstance(value, (list, tuple)):
        return [str(tag) for tag in value if tag is not None and str(tag).strip()]
    if not isinstance(value, str):
        return [] if value is None else [str(value)]
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parse_tags(parsed)
    return [part.strip() for part in text.split(",") if part.strip()]


def _thread_id(attributes: Mapping[str, Any]) -> Optional[str]:
    for key in _THREAD_KEYS:
        value = attributes.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value)
    return None


def _usage_value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(f"usage attribute {key}={value!r} is not valid JSON") from None
    return value


def map_attributes(attributes: Mapping[str, Any]) -> MappedAttributes:
    """Map one span's attributes the way the backend does (contract §4).

    Raises ``ValueError`` for a ``gen_ai.usage.*`` string that is not JSON: the backend
    rejects the whole request with 400 in that case.
    """
    mapped = MappedAttributes()
    for key, value in attributes.items():
        if key in _ID_KEYS or key in _THREAD_KEYS or key in _MODEL_KEYS or key in _PROVIDER_KEYS:
            continue  # handled below or never stored as data
        if key == "opik.tags":
            mapped.tags.extend(parse_tags(value))
        elif key == "opik.metadata":
            parsed: Any = None
            if isinstance(value, str):
                try:
                    parsed = json.loads(value)
                except ValueError:
                    parsed = None
            if isinstance(parsed, dict):
                mapped.metadata.update(parsed)
            else:
                mapped.metadata[key] = value
                mapped.warnings.append("opik.metadata is not a JSON object string; stored verbatim")
        elif key.startswith("opik.metadata."):
            mapped.metadata[key] = value
        elif key.startswith(_USAGE_PREFIX):
            name = key[len(_USAGE_PREFIX):]
            parsed_value = _usage_value(key, value)
            if name == "cost":
                mapped.total_cost = parsed_value
            else:
                mapped.usage[_USAGE_RENAMES.get(name, name)] = parsed_value
        elif key.startswith(_OUTPUT_PREFIXES):
            mapped.output[key] = value
        else:
            # Both the input prefixes and every unmatched key land in input (§4), which
            # is exactly what lets tests catch private attributes leaking to Opik.
            mapped.input[key] = value
    mapped.thread_id = _thread_id(attributes)
    mapped.model = next((str(attributes[k]) for k in _MODEL_KEYS if attributes.get(k)), None)
    mapped.provider = next((str(attributes[k]) for k in _PROVIDER_KEYS if attributes.get(k)), None)
    return mapped


def _error_info(span: Span) -> Optional[Dict[str, Any]]:
    exceptions = [event for event in span.events if event.name == "exception"]
    if exceptions:
        attrs = _attributes(exceptions[-1].attributes)
        return {
            "exception_type": attrs.get("exception.type"),
            "message": attrs.get("exception.message"),
            "traceback": attrs.get("exception.stacktrace"),
        }
    if span.status.code == Status.STATUS_CODE_ERROR:
        return {"exception_type": "Error", "message": span.status.message, "traceback": None}
    return None


def _integration(request: ExportTraceServiceRequest) -> Optional[str]:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            name = scope_spans.scope.name
            if name and name != "logfire":
                return name
    return None


@dataclasses.dataclass
class _IncomingSpan:
    span: Span
    attributes: Dict[str, Any]
    mapped: MappedAttributes


def _incoming_spans(request: ExportTraceServiceRequest) -> List[_IncomingSpan]:
    """Map every span of a request before storing any, so one bad span rejects them all."""
    incoming = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = _attributes(span.attributes)
                incoming.append(_IncomingSpan(span, attributes, map_attributes(attributes)))
    return incoming


def _optional_id(item: Mapping[str, Any], key: str) -> Optional[str]:
    value = item.get(key)
    if value is None:
        return None
    canonical = canonical_uuid_v7(value)
    if canonical is None:
        raise ValueError(f"{key} {value!r} is not a UUIDv7")
    return canonical


def _rest_common(item: Any, kind: str) -> Dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"each {kind} must be a JSON object")
    if item.get("start_time") is None:
        raise ValueError(f"{kind} start_time is required")
    tags = item.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise ValueError(f"{kind} tags must be a list of strings")
    project = item.get("project_name")
    if project is not None and not isinstance(project, str):
        raise ValueError(f"{kind} project_name must be a string")
    return {
        "id": _optional_id(item, "id") or generate_id(),
        "start_time": _normalize_iso(item["start_time"]),
        "end_time": _normalize_iso(item["end_time"]) if item.get("end_time") is not None else None,
        "tags": list(tags or []),
        "project_name": project,
    }


def _trace_from_rest(item: Any, project: str, workspace: str) -> TraceRecord:
    common = _rest_common(item, "trace")
    thread_id = item.get("thread_id")
    return TraceRecord(
        id=common["id"],
        name=item.get("name"),
        project_name=common["project_name"] or project,
        workspace=workspace,
        start_time=common["start_time"],
        end_time=common["end_time"],
        input=item.get("input"),
        output=item.get("output"),
        metadata=item.get("metadata"),
        tags=common["tags"],
        thread_id=None if thread_id is None else str(thread_id),
        error_info=item.get("error_info"),
        source="rest",
        environment=item.get("environment"),
    )


def _span_from_rest(item: Any, project: str, workspace: str) -> SpanRecord:
    common = _rest_common(item, "span")
    trace_id = _optional_id(item, "trace_id")
    if trace_id is None:
        raise ValueError("span trace_id is required")
    return SpanRecord(
        id=common["id"],
        trace_id=trace_id,
        parent_span_id=_optional_id(item, "parent_span_id"),
        name=item.get("name"),
        project_name=common["project_name"] or project,
        workspace=workspace,
        start_time=common["start_time"],
        end_time=common["end_time"],
        type=item.get("type") or "general",
        input=item.get("input"),
        output=item.get("output"),
        metadata=item.get("metadata"),
        tags=common["tags"],
        usage=item.get("usage") or {},
        total_cost=item.get("total_estimated_cost"),
        model=item.get("model"),
        provider=item.get("provider"),
        error_info=item.get("error_info"),
        source="rest",
    )


def _short(opik_id: Optional[str]) -> str:
    # The head of a UUIDv7 is its timestamp, shared by all derived ids of a trace.
    return f"..{opik_id[-8:]}" if opik_id else "-"


def render_tree(trace: Optional[TraceRecord], trace_id: str, spans: Sequence[SpanRecord]) -> str:
    """Render a trace and its spans as an indented tree, orphaned spans marked."""
    if trace is not None:
        header = f"trace {trace.name!r} {trace.id} [project {trace.project_name!r}, {trace.source}]"
    else:
        header = f"trace {trace_id} [NO TRACE ROW: Opik shows these spans as orphans]"
    lines = [header]
    ordered = sorted(spans, key=lambda s: (s.start_time or "", s.id))
    known = {span.id for span in ordered}
    children: Dict[Optional[str], List[SpanRecord]] = defaultdict(list)
    for span in ordered:
        parent = span.parent_span_id if span.parent_span_id in known else None
        if span.parent_span_id is None or parent is not None:
            children[parent].append(span)
    visited = set()

    def walk(span: SpanRecord, depth: int, note: str = "") -> None:
        visited.add(span.id)
        lines.append(f"{'  ' * depth}- {span.name} ({_short(span.id)}){note}")
        for child in children[span.id]:
            if child.id not in visited:
                walk(child, depth + 1)

    for span in children[None]:
        walk(span, 1)
    # Missing parents, and parent cycles that no root reaches, are both unreachable.
    stray = [span for span in ordered if span.id not in visited]
    if stray:
        lines.append("  ORPHANED (parent span not in this trace):")
        for span in stray:
            if span.id not in visited:
                problem = "in a parent cycle" if span.parent_span_id in known else "missing"
                walk(span, 2, f" parent {_short(span.parent_span_id)} {problem}")
    return "\n".join(lines)


def _redact_headers(items: Sequence[Tuple[str, str]]) -> Dict[str, str]:
    redacted = {}
    for name, value in items:
        secret = any(marker in name.lower() for marker in _SECRET_HEADER_MARKERS)
        redacted[name] = "***" if secret else value
    return redacted


def _format_retry_after(value: Union[float, str]) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


# ------------------------------------------------------------------------ the server


@dataclasses.dataclass
class _CachedTraceId:
    trace_id: str
    timestamp_ms: int
    last_used: float


@dataclasses.dataclass
class _Response:
    status: int
    message: Optional[str] = None
    headers: Dict[str, str] = dataclasses.field(default_factory=dict)
    injected: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for handlers sleeping in delay()
    allow_reuse_address = True  # accept_connections() re-binds the same port
    local_opik: "LocalOpik"

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            self.local_opik._warn(f"server error: {exc!r}")


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalOpik"
    # HTTP/1.0 closes each connection, so refuse_connections() really cuts clients off
    # instead of leaving pooled keep-alive connections talking to the old socket.
    protocol_version = "HTTP/1.0"
    # A client that promises more body than it sends must not pin a thread forever.
    timeout = 10.0
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def _dispatch(self) -> None:
        self.server.local_opik._handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; every request is in LocalOpik.requests


class LocalOpik:
    """An Opik ingest server on ``127.0.0.1`` that records what Opik would store.

    Args:
        api_key: when set, every request must carry ``Authorization: <api_key>`` (the raw
            key, no ``Bearer``) or gets 401.
        workspace: workspace assumed when a request has no ``Comet-Workspace`` header
            (default ``default``).
        max_body_bytes: request bodies larger than this (on the wire) get 413; also
            settable at run time through the attribute of the same name.
        trace_id_ttl_seconds: lifetime of a derived trace id in the cache, refreshed on
            use; a later batch of the same OTel trace gets a new id (the trace splits, as
            with the backend's 3 h Redis TTL). ``None`` keeps ids forever.
        port: port to bind; 0 lets the OS choose.

    Records are returned as deep copies, so callers may mutate them freely. Thread safe.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        workspace: Optional[str] = None,
        max_body_bytes: Optional[int] = None,
        trace_id_ttl_seconds: Optional[float] = None,
        *,
        port: int = 0,
    ) -> None:
        self._api_key = api_key
        self.default_workspace = workspace or DEFAULT_WORKSPACE
        self.max_body_bytes = DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
        self.trace_id_ttl_seconds = trace_id_ttl_seconds
        self._port = port
        self._lifecycle = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._running = False
        self._cond = threading.Condition(threading.RLock())
        self._traces: Dict[Tuple[str, str, str], TraceRecord] = {}
        self._spans: Dict[Tuple[str, str, str], SpanRecord] = {}
        self._projects: Dict[Tuple[str, str], None] = {}  # insertion-ordered set
        self._requests: List[RequestRecord] = []
        self._warnings: List[str] = []
        self._trace_id_cache: Dict[Tuple[str, str, bytes], _CachedTraceId] = {}
        self._stats = self._empty_stats()
        self._fail_remaining = 0
        self._fail_status = 503
        self._fail_retry_after: Optional[Union[float, str]] = None
        self._delay_seconds = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "LocalOpik":
        """Start serving (idempotent); returns ``self``."""
        with self._lifecycle:
            self._running = True
            if self._server is None:
                self._bind()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; recorded data stays queryable."""
        with self._lifecycle:
            self._running = False
            self._close()

    def __enter__(self) -> "LocalOpik":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _bind(self) -> None:
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.local_opik = self
        self._port = server.server_address[1]
        # A short poll interval keeps shutdown() (hence stop()) in the tens of ms.
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"LocalOpik:{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _close(self) -> None:
        server, self._server, self._thread = self._server, None, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def port(self) -> int:
        """The bound port (stable across refuse/accept_connections)."""
        if not self._port:
            raise RuntimeError("LocalOpik has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The Opik API base URL, e.g. ``http://127.0.0.1:50123/api``."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def otlp_endpoint(self) -> str:
        """The OTLP base to put in ``OTEL_EXPORTER_OTLP_ENDPOINT`` (exporters add ``/v1/traces``)."""
        return f"{self.url}/v1/private/otel"

    @property
    def otlp_traces_endpoint(self) -> str:
        """The full OTLP/HTTP traces ingest URL."""
        return f"http://127.0.0.1:{self.port}{OTLP_TRACES_PATH}"

    def __repr__(self) -> str:
        where = f"http://127.0.0.1:{self._port}{API_PREFIX}" if self._port else "not started"
        auth = "on" if self._api_key is not None else "off"
        with self._cond:
            counts = f"traces={len(self._traces)}, spans={len(self._spans)}"
        return f"LocalOpik({where}, auth={auth}, {counts})"

    # ------------------------------------------------------------ fault injection

    def fail_next(
        self, n: int, status: int = 503, retry_after: Optional[Union[float, str]] = None
    ) -> None:
        """Answer ``status`` to the next ``n`` write requests and store nothing from them.

        Applies to the OTLP traces and REST batch paths. With ``retry_after`` the answer
        carries a ``Retry-After`` header (seconds, or an HTTP date string).
        """
        with self._cond:
            self._fail_remaining = n
            self._fail_status = status
            self._fail_retry_after = retry_after

    def refuse_connections(self) -> None:
        """Close the listening socket: connections are refused until accept_connections()."""
        with self._lifecycle:
            self._close()

    def accept_connections(self) -> None:
        """Listen again on the same port after refuse_connections()."""
        with self._lifecycle:
            if self._running and self._server is None:
                self._bind()

    @contextmanager
    def down(self) -> Iterator["LocalOpik"]:
        """Refuse connections for the duration of the ``with`` block."""
        self.refuse_connections()
        try:
            yield self
        finally:
            self.accept_connections()

    def delay(self, seconds: float) -> None:
        """Delay every response by ``seconds`` (0 turns the delay off)."""
        self._delay_seconds = max(0.0, float(seconds))

    # ------------------------------------------------------------- request handling

    def _handle(self, handler: _Handler) -> None:
        delay = self._delay_seconds
        if delay:
            time.sleep(delay)
        headers = handler.headers
        path = urlsplit(handler.path).path
        project = (headers.get("projectName") or "").strip() or DEFAULT_PROJECT
        workspace = (headers.get("Comet-Workspace") or "").strip() or self.default_workspace
        body_size = [0]
        try:
            response = self._process(handler, path, project, workspace, body_size)
        except Exception as exc:  # a bug here must still produce an answer
            response = _Response(500, f"LocalOpik internal error: {exc!r}")
            self._warn(response.message or "")
        with self._cond:
            self._stats["requests_received"] += 1
            if response.injected:
                self._stats["injected_failures"] += 1
            self._requests.append(
                RequestRecord(
                    method=handler.command,
                    path=path,
                    headers=_redact_headers(list(headers.items())),
                    content_type=headers.get("Content-Type"),
                    content_encoding=headers.get("Content-Encoding"),
                    body_size=body_size[0],
                    status=response.status,
                    project=project,
                    workspace=workspace,
                    injected=response.injected,
                    error=response.message if response.status >= 400 else None,
                    received_at=time.time(),
                )
            )
            self._cond.notify_all()
        self._send(handler, response)

    def _send(self, handler: _Handler, response: _Response) -> None:
        body = b""
        if response.status >= 400 and response.message is not None:
            body = json.dumps({"code": response.status, "message": response.message}).encode()
        try:
            handler.send_response(response.status)
            for name, value in response.headers.items():
                handler.send_header(name, value)
            if body:
                handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            if body and handler.command != "HEAD":
                handler.wfile.write(body)
        except OSError:
            pass  # the client gave up (e.g. its timeout fired during delay())

    def _process(
        self, handler: _Handler, path: str, project: str, workspace: str, body_size: List[int]
    ) -> _Response:
        method = handler.command
        if path == HEALTH_PATH and method == "GET":
            return _Response(200, "")
        if path == OTLP_METRICS_PATH and method == "POST":
            self._drain(handler)
            return _Response(501, "Opik ingests OTLP traces only; metrics are not supported")
        if path not in _WRITE_PATHS and path != OTLP_METRICS_PATH:
            self._drain(handler)
            return _Response(404, f"no such endpoint: {path}")
        if method != "POST":
            self._drain(handler)
            return _Response(405, f"{method} not allowed on {path}", {"Allow": "POST"})
        with self._cond:
            if self._fail_remaining > 0:
                self._fail_remaining -= 1
                injected = _Response(self._fail_status, "injected failure", injected=True)
                if self._fail_retry_after is not None:
                    injected.headers["Retry-After"] = _format_retry_after(self._fail_retry_after)
            else:
                injected = None
        if injected is not None:
            body_size[0] = self._drain(handler)
            return injected
        if self._api_key is not None and handler.headers.get("Authorization") != self._api_key:
            self._drain(handler)
            return _Response(401, "missing or invalid API key in the Authorization header")
        try:
            body = self._read_body(handler, body_size)
            data = _decode_content(body, handler.headers.get("Content-Encoding"))
            if path == OTLP_TRACES_PATH:
                self._ingest_otlp(_parse_otlp(data, _media_type(handler.headers)), project, workspace)
                return _Response(200)
            self._ingest_rest(path, data, project, workspace)
            return _Response(204)
        except _HttpError as exc:
            return _Response(exc.status, exc.message)

    def _read_body(self, handler: _Handler, body_size: List[int]) -> bytes:
        limit = self.max_body_bytes
        if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
            body, total = _read_chunked(handler.rfile, limit)
            body_size[0] = total
        else:
            raw = (handler.headers.get("Content-Length") or "").strip()
            if not raw.isdigit():
                raise _HttpError(400, f"bad Content-Length {raw!r}")
            length = int(raw)
            if length > limit:
                body_size[0] = self._drain(handler)
                raise _HttpError(413, f"body of {length} bytes exceeds the {limit} byte limit")
            try:
                body = handler.rfile.read(length)
            except OSError as exc:
                raise _HttpError(400, f"could not read the body: {exc}") from exc
            body_size[0] = total = len(body)
            if total < length:
                raise _HttpError(400, "body shorter than Content-Length")
        if total > limit:
            raise _HttpError(413, f"body of {total} bytes exceeds the {limit} byte limit")
        return body

    @staticmethod
    def _drain(handler: _Handler) -> int:
        # Reading the body we are going to reject lets the client see our status instead
        # of a connection reset while it is still sending.
        raw = (handler.headers.get("Content-Length") or "").strip()
        remaining = min(int(raw), _DRAIN_LIMIT) if raw.isdigit() else 0
        total = 0
        try:
            while remaining > 0:
                chunk = handler.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                total += len(chunk)
                remaining -= len(chunk)
        except OSError:
            pass
        return total

    # ------------------------------------------------------------------- ingest

    def _ingest_otlp(self, request: ExportTraceServiceRequest, project: str, workspace: str) -> None:
        try:
            incoming = _incoming_spans(request)
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from exc
        integration = _integration(request)
        earliest: Dict[bytes, int] = {}
        for item in incoming:
            start_ms = item.span.start_time_unix_nano // 1_000_000
            trace_key = item.span.trace_id
            earliest[trace_key] = min(earliest.get(trace_key, start_ms), start_ms)
        with self._cond:
            trace_ids = {
                otel_id: self._derived_trace_id(workspace, project, otel_id, start_ms)
                for otel_id, start_ms in earliest.items()
            }
            self._projects[(workspace, project)] = None
            for item in incoming:
                self._store_otel_span(item, trace_ids, integration, project, workspace)
            self._cond.notify_all()

    def _derived_trace_id(
        self, workspace: str, project: str, otel_trace_id: bytes, earliest_ms: int
    ) -> Tuple[str, int]:
        key = (workspace, project, otel_trace_id)
        now = time.monotonic()
        ttl = self.trace_id_ttl_seconds
        cached = self._trace_id_cache.get(key)
        if cached is None or (ttl is not None and now - cached.last_used > ttl):
            cached = _CachedTraceId(derived_uuid_v7(earliest_ms, otel_trace_id), earliest_ms, now)
            self._trace_id_cache[key] = cached
        cached.last_used = now  # like a Redis TTL refreshed on every read
        return cached.trace_id, cached.timestamp_ms

    def _store_otel_span(
        self,
        item: _IncomingSpan,
        trace_ids: Mapping[bytes, Tuple[str, int]],
        integration: Optional[str],
        project: str,
        workspace: str,
    ) -> None:
        span, mapped = item.span, item.mapped
        derived_trace_id, timestamp_ms = trace_ids[span.trace_id]
        ids = resolve_span_ids(
            item.attributes,
            derived_trace_id=derived_trace_id,
            trace_timestamp_ms=timestamp_ms,
            otel_span_id=span.span_id,
            otel_parent_span_id=span.parent_span_id,
        )
        for warning in ids.warnings + mapped.warnings:
            self._warn(f"span {span.name!r}: {warning}")
        metadata = dict(mapped.metadata)
        if integration:
            metadata["integration"] = integration
        if span.events:
            metadata["opentelemetry.events"] = [
                {
                    "name": event.name,
                    "time_unix_nano": event.time_unix_nano,
                    "attributes": _attributes(event.attributes),
                }
                for event in span.events
            ]
        record = SpanRecord(
            id=ids.span_id,
            trace_id=ids.trace_id,
            parent_span_id=ids.parent_span_id,
            name=span.name,
            project_name=project,
            workspace=workspace,
            start_time=_iso_from_unix_nano(span.start_time_unix_nano),
            end_time=_iso_from_unix_nano(span.end_time_unix_nano),
            type="llm" if (mapped.model or mapped.provider) else "general",
            input=mapped.input,
            output=mapped.output,
            metadata=metadata,
            tags=mapped.tags,
            usage=mapped.usage,
            total_cost=mapped.total_cost,
            model=mapped.model,
            provider=mapped.provider,
            error_info=_error_info(span),
            thread_id=mapped.thread_id,
            source="otel",
            attributes=item.attributes,
            otel_trace_id=span.trace_id.hex(),
            otel_span_id=span.span_id.hex(),
            otel_parent_span_id=span.parent_span_id.hex() if span.parent_span_id else None,
            start_time_unix_nano=span.start_time_unix_nano,
            end_time_unix_nano=span.end_time_unix_nano,
        )
        self._put_span(record)
        if ids.is_root:
            self._put_trace(
                TraceRecord(
                    id=record.trace_id,
                    name=record.name,
                    project_name=project,
                    workspace=workspace,
                    start_time=record.start_time,
                    end_time=record.end_time,
                    input=copy.deepcopy(record.input),
                    output=copy.deepcopy(record.output),
                    metadata=copy.deepcopy(record.metadata),
                    tags=list(record.tags),
                    thread_id=record.thread_id,
                    error_info=copy.deepcopy(record.error_info),
                    source="otel-root",
                    root_span_id=record.id,
                )
            )

    def _ingest_rest(self, path: str, data: bytes, project: str, workspace: str) -> None:
        kind = "traces" if path == TRACES_BATCH_PATH else "spans"
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise _HttpError(400, f"body is not JSON: {exc}") from exc
        items = document.get(kind) if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise _HttpError(400, f'body must be {{"{kind}": [...]}}')
        build: Callable[[Any, str, str], Any] = (
            _trace_from_rest if kind == "traces" else _span_from_rest
        )
        try:
            records = [build(item, project, workspace) for item in items]
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from exc
        with self._cond:
            for record in records:
                self._projects[(workspace, record.project_name)] = None
                if kind == "traces":
                    self._put_trace(record)
                else:
                    self._put_span(record)
            self._cond.notify_all()

    def _put_span(self, record: SpanRecord) -> None:
        key = (record.workspace, record.project_name, record.id)
        if key in self._spans:
            self._stats["duplicate_span_ids"] += 1
        self._spans[key] = record
        self._stats["spans_accepted"] += 1

    def _put_trace(self, record: TraceRecord) -> None:
        self._traces[(record.workspace, record.project_name, record.id)] = record
        self._stats["traces_written"] += 1

    def _warn(self, message: str) -> None:
        with self._cond:
            self._warnings.append(message)

    @staticmethod
    def _empty_stats() -> Dict[str, int]:
        return {
            "requests_received": 0,
            "spans_accepted": 0,
            "duplicate_span_ids": 0,
            "traces_written": 0,
            "injected_failures": 0,
        }

    # -------------------------------------------------------------------- queries

    def projects(self, workspace: Optional[str] = None) -> List[str]:
        """Names of the projects written to, in order of first write."""
        with self._cond:
            names = [p for (ws, p) in self._projects if workspace is None or ws == workspace]
        return list(dict.fromkeys(names))

    def _select_traces(self, project: Optional[str], workspace: Optional[str]) -> List[TraceRecord]:
        return [
            t
            for t in self._traces.values()
            if (project is None or t.project_name == project)
            and (workspace is None or t.workspace == workspace)
        ]

    def _select_spans(
        self, project: Optional[str], trace_id: Optional[str], workspace: Optional[str]
    ) -> List[SpanRecord]:
        return [
            s
            for s in self._spans.values()
            if (project is None or s.project_name == project)
            and (trace_id is None or s.trace_id == trace_id)
            and (workspace is None or s.workspace == workspace)
        ]

    def traces(self, project: Optional[str] = None, workspace: Optional[str] = None) -> List[TraceRecord]:
        """Trace rows, oldest first, optionally filtered by project and workspace."""
        with self._cond:
            found = copy.deepcopy(self._select_traces(project, workspace))
        return sorted(found, key=lambda t: (t.start_time or "", t.id))

    def spans(
        self,
        project: Optional[str] = None,
        trace_id: Optional[str] = None,
        workspace: Optional[str] = None,
    ) -> List[SpanRecord]:
        """Span rows, oldest first, optionally filtered by project, trace and workspace."""
        trace_id = canonical_uuid_v7(trace_id) or trace_id
        with self._cond:
            found = copy.deepcopy(self._select_spans(project, trace_id, workspace))
        return sorted(found, key=lambda s: (s.start_time or "", s.id))

    def trace(self, trace_id: str) -> Optional[TraceRecord]:
        """The trace row with this id (any project), or ``None``."""
        trace_id = canonical_uuid_v7(trace_id) or trace_id
        with self._cond:
            for record in self._traces.values():
                if record.id == trace_id:
                    return copy.deepcopy(record)
        return None

    def tree(self, trace_id: str) -> str:
        """A printable tree of a trace: its row (or its absence) and spans by parent."""
        trace_id = canonical_uuid_v7(trace_id) or trace_id
        return render_tree(self.trace(trace_id), trace_id, self.spans(trace_id=trace_id))

    def trees(self, project: Optional[str] = None) -> str:
        """Every trace's tree, including trace ids that only spans mention."""
        with self._cond:
            ids = [t.id for t in self.traces(project)]
            ids += [s.trace_id for s in self.spans(project)]
        return "\n\n".join(self.tree(trace_id) for trace_id in dict.fromkeys(ids))

    def orphans(self, project: Optional[str] = None, workspace: Optional[str] = None) -> List[SpanRecord]:
        """Spans Opik would show as orphans: no trace row, or a parent missing from the trace."""
        with self._cond:
            found = []
            for span in self._select_spans(project, None, workspace):
                if (span.workspace, span.project_name, span.trace_id) not in self._traces:
                    found.append(span)
                    continue
                if span.parent_span_id is not None:
                    parent = self._spans.get((span.workspace, span.project_name, span.parent_span_id))
                    if parent is None or parent.trace_id != span.trace_id:
                        found.append(span)
            found = copy.deepcopy(found)
        return sorted(found, key=lambda s: (s.start_time or "", s.id))

    @property
    def requests(self) -> List[RequestRecord]:
        """Every request answered so far, oldest first."""
        with self._cond:
            return copy.deepcopy(self._requests)

    @property
    def warnings(self) -> List[str]:
        """What the backend would have logged as warnings (ignored ids, bad metadata ...)."""
        with self._cond:
            return list(self._warnings)

    @property
    def stats(self) -> Dict[str, int]:
        """Counters: requests_received, spans_accepted, duplicate_span_ids, traces_written,
        injected_failures."""
        with self._cond:
            return dict(self._stats)

    def wait_for_spans(self, count: int, timeout: float = 10.0, project: Optional[str] = None) -> bool:
        """Block until at least ``count`` spans are stored (in ``project``); False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self._select_spans(project, None, None)) >= count, timeout
            )

    def wait_for_traces(self, count: int, timeout: float = 10.0, project: Optional[str] = None) -> bool:
        """Block until at least ``count`` trace rows are stored (in ``project``); False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self._select_traces(project, None)) >= count, timeout
            )

    def clear(self) -> None:
        """Forget all data, requests, warnings, counters and cached trace ids.

        Fault-injection settings (fail_next, delay, max_body_bytes) are kept.
        """
        with self._cond:
            self._traces.clear()
            self._spans.clear()
            self._projects.clear()
            self._requests.clear()
            self._warnings.clear()
            self._trace_id_cache.clear()
            self._stats = self._empty_stats()


def _read_chunked(rfile: BinaryIO, limit: int) -> Tuple[bytes, int]:
    # Keep reading past the limit so the client sees a 413 rather than a reset.
    chunks: List[bytes] = []
    total = 0
    try:
        while True:
            size_line = rfile.readline(65537)
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks), total
            data = rfile.read(size)
            if len(data) < size:
                raise _HttpError(400, "truncated chunked body")
            rfile.readline()
            total += size
            if total <= limit:
                chunks.append(data)
    except (ValueError, OSError) as exc:
        raise _HttpError(400, f"bad chunked body: {exc}") from exc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a LocalOpik in the foreground; Ctrl-C prints every trace tree received."""
    parser = argparse.ArgumentParser(
        prog="python -m opik_otel.testing",
        description="Local Opik ingest server for trying out OTel instrumentation.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    parser.add_argument("--api-key", default=None, help="require this Authorization header")
    args = parser.parse_args(argv)
    with LocalOpik(api_key=args.api_key, port=args.port) as opik:
        print(f"LocalOpik listening on {opik.url}", flush=True)
        print(f"  OPIK_URL_OVERRIDE={opik.url}", flush=True)
        print(f"  OTEL_EXPORTER_OTLP_ENDPOINT={opik.otlp_endpoint}", flush=True)
        print("Press Ctrl-C to stop and print the traces received.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        print(opik.trees() or "(no traces received)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
