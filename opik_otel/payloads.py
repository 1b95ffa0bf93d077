"""Request bodies bound for Opik, and how to make them smaller.

A :class:`Payload` is one request: OTLP spans (protobuf) or trace rows (JSON). When
Opik (or a proxy) refuses it as too large, it splits in halves, and a single span or
row that is still too large has its largest values cut, with a marker saying how much.
Ids, names and ``opik.*`` linkage are never cut.
"""

import json
from typing import Any, Dict, Optional, Tuple

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .jsontext import dump_json
from .sizing import truncate_rows_document, truncate_spans_request

SPANS = "spans"
TRACES = "traces"



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

    def item_count(self) -> int:
        """Spans or trace rows in this payload (0 when it cannot be parsed)."""
        message = self._parsed()
        if message is None:
            return 0
        if self.kind == SPANS:
            return sum(len(scope.spans) for resource in message.resource_spans for scope in resource.scope_spans)
        return len(message["traces"])

    def truncated(self, max_bytes: int) -> Optional["Payload"]:
        """A copy of a one-item payload whose largest values are cut to fit
        ``max_bytes``; None when there is nothing to cut."""
        message = self._parsed()
        if message is None:
            return None
        smaller: Any
        if self.kind == SPANS:
            smaller = truncate_spans_request(message, max_bytes)
        else:
            smaller = truncate_rows_document(message, max_bytes)
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
