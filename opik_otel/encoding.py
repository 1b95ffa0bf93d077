"""Encoding prepared data as request bodies: spans as OTLP protobuf, trace rows as JSON.

One function per kind, so that a faster encoder is swapped in by changing one call.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan

from .trace_rows import trace_rows_request_body
from .jsontext import dump_json


@dataclass(frozen=True)
class EncodedSpans:
    """An OTLP ``ExportTraceServiceRequest`` body and what went into it."""

    body: bytes
    items: int
    # Names of spans the encoder could not take; they are left out.
    unencodable: List[str]


def encode_span_batch(spans: Sequence[ReadableSpan]) -> EncodedSpans:
    """``spans`` as one OTLP protobuf request body; a span the encoder cannot take is
    left out (named in ``unencodable``) rather than failing the batch."""
    try:
        return EncodedSpans(encode_spans(spans).SerializeToString(), len(spans), [])
    except Exception:
        pass
    merged = ExportTraceServiceRequest()
    left_out: List[str] = []
    for span in spans:
        try:
            merged.MergeFrom(encode_spans([span]))
        except Exception:
            left_out.append(span.name)
    return EncodedSpans(merged.SerializeToString(), len(spans) - len(left_out), left_out)


def encode_trace_rows(rows: List[Dict[str, Any]]) -> bytes:
    """Trace rows as the JSON body of Opik's ``traces/batch`` REST call."""
    document: Any = trace_rows_request_body(rows)
    return dump_json(document).encode("utf-8")
