"""Encoding prepared data as request bodies: spans as OTLP protobuf, trace rows as JSON,
and the compression of what is queued.
"""

import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan

from .jsontext import dump_json
from .otlp_wire import WireEncoder, official_request
from .trace_rows import trace_rows_request_body

# zlib's fast levels (1-3) are several times faster than level 6 on span batches for a
# few percent more bytes; compression runs on the export thread, under the GIL for
# small bodies, so it is time the application loses.
GZIP_LEVEL = 3


@dataclass(frozen=True)
class EncodedSpans:
    """An OTLP ``ExportTraceServiceRequest`` body and what went into it."""

    body: bytes
    items: int
    # Names of spans the encoder could not take; they are left out.
    unencodable: List[str]


def encode_span_batch(
    spans: Sequence[ReadableSpan],
    changes: Sequence[Mapping[str, Any]],
    encoder: Optional[WireEncoder],
) -> EncodedSpans:
    """``spans`` with their attribute ``changes`` as one OTLP protobuf request body,
    written by ``encoder`` (``None``: OpenTelemetry's own encoder on repaired copies); a
    span that cannot be encoded is left out (named in ``unencodable``) rather than
    failing the batch."""
    encoded = encoder.encode(spans, changes) if encoder is not None else official_request(spans, changes)
    left_out = [str(span.name) for span in encoded.unencodable]
    return EncodedSpans(encoded.body, len(spans) - len(left_out), left_out)


def encode_trace_rows(rows: List[Dict[str, Any]]) -> bytes:
    """Trace rows as the JSON body of Opik's ``traces/batch`` REST call."""
    document: Any = trace_rows_request_body(rows)
    return dump_json(document).encode("utf-8")


def gzip_compress(body: bytes) -> bytes:
    """``body`` as a gzip member, in one C call (``gzip.compress`` adds a crc32 pass)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()
