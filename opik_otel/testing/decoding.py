"""Decoding request bodies the way Opik's ingest does: content encodings, OTLP
protobuf and JSON, chunked transfer, and the REST trace/span batch items.

Malformed input raises :class:`HttpError` (or ``ValueError`` for REST items) carrying
the status Opik would answer.
"""

import base64
import gzip
import json
import zlib
from datetime import datetime, timezone
from typing import Any, BinaryIO, Dict, List, Mapping, Optional, Tuple, Union

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from opik_otel.ids import canonical_uuid_v7, generate_id
from opik_otel.testing.records import SpanRecord, TraceRecord

_OTLP_JSON_ID_FIELDS = frozenset(
    {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message



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


def decode_content(body: bytes, encoding: Optional[str]) -> bytes:
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise HttpError(500, f"cannot decompress gzip body: {exc}") from exc
    raise HttpError(415, f"unsupported Content-Encoding {encoding!r} (use gzip or none)")


def content_media_type(headers: Mapping[str, str]) -> str:
    return (headers.get("Content-Type") or "").split(";")[0].strip().lower()


def parse_otlp(data: bytes, media_type: str) -> ExportTraceServiceRequest:
    if media_type == "application/x-protobuf":
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(data)
        except Exception as exc:  # protobuf raises DecodeError, sometimes others
            raise HttpError(500, f"unparsable protobuf body: {exc}") from exc
        return message
    if media_type == "application/json":
        try:
            return otlp_json_to_request(data)
        except Exception as exc:
            raise HttpError(500, f"unparsable OTLP/JSON body: {exc}") from exc
    raise HttpError(
        415, f"unsupported Content-Type {media_type!r}: use application/x-protobuf or application/json"
    )


def read_chunked(rfile: BinaryIO, limit: int) -> Tuple[bytes, int]:
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
                raise HttpError(400, "truncated chunked body")
            rfile.readline()
            total += size
            if total <= limit:
                chunks.append(data)
    except (ValueError, OSError) as exc:
        raise HttpError(400, f"bad chunked body: {exc}") from exc


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


def trace_from_rest(item: Any, project: str, workspace: str) -> TraceRecord:
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


def span_from_rest(item: Any, project: str, workspace: str) -> SpanRecord:
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
