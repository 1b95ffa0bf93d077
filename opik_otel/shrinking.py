"""Making requests small enough: before queueing (``max_request_bytes``) and on HTTP 413.

A request that is too large splits in halves; one holding a single span or trace row has
its largest values cut (:mod:`opik_otel.sizing`). The smallest size a server refused is
remembered, so later records are split before they are sent instead of costing a 413
each; a server refusing even small requests is given up on after a few, with one line
naming the limit.
"""

import gzip
from collections import deque
from dataclasses import dataclass
from typing import Deque, List, Optional

from .encoding import gzip_compress
from .http_values import redact_url
from .payloads import Payload
from .queue import Record
from .reporting import Reporter

# A server answering 413 to a request this small refuses every size: splitting further
# would cost a request per span for nothing.
SMALLEST_REFUSED_SIZE = 4 * 1024
# 413 answers one record may cost before it is given up on (a 512-span batch halves
# in 9 steps; the rest is truncation of single spans).
MAX_413_PER_RECORD = 32


@dataclass
class Piece:
    """Part of a record, as sent (``body``, compressed when the record is)."""

    payload: Payload
    body: bytes


@dataclass
class Fitted:
    """What :func:`fit` made of a payload."""

    pieces: List[Payload]
    splits: int = 0
    truncated: int = 0


def fit(payload: Payload, max_bytes: int) -> Fitted:
    """``payload`` as pieces no larger than ``max_bytes`` (uncompressed) where splitting
    and truncation can make them so; a piece that cannot shrink is kept as it is."""
    result = Fitted([])
    work: Deque[Payload] = deque([payload])
    while work:
        current = work.popleft()
        if len(current.body) <= max_bytes:
            result.pieces.append(current)
            continue
        halves = current.split()
        if halves is not None:
            result.splits += 1
            work.extendleft(reversed(halves))
            continue
        smaller = current.truncated(max_bytes)
        if smaller is None or len(smaller.body) >= len(current.body):
            result.pieces.append(current)
        else:
            result.truncated += 1
            result.pieces.append(smaller)
    return result


class Shrinker:
    """Turns a record into pieces to send, and answers 413s with smaller ones."""

    def __init__(self, reporter: Reporter, max_request_bytes: int) -> None:
        self._report = reporter
        self._max_request_bytes = max_request_bytes
        self.refused_size: Optional[int] = None  # smallest body (as sent) answered 413

    def whole(self, record: Record) -> Piece:
        gzipped = record.content_encoding == "gzip"
        body = gzip.decompress(record.body) if gzipped else record.body
        return Piece(Payload(record.kind, body=body), record.body)

    def piece(self, record: Record, payload: Payload) -> Piece:
        body = payload.body
        if record.content_encoding == "gzip":
            body = gzip_compress(body)
        return Piece(payload, body)

    def presplit(self, record: Record, piece: Piece) -> Optional[List[Piece]]:
        """Smaller pieces when ``piece`` is not smaller than what the server refused."""
        if self.refused_size is None or len(piece.body) < self.refused_size:
            return None
        return self._smaller(record, piece)

    def after_413(self, record: Record, piece: Piece, count: int, url: str) -> Optional[List[Piece]]:
        """The pieces to send instead of one answered 413, or ``None``: give up (logged)."""
        size = len(piece.body)
        self.refused_size = size if self.refused_size is None else min(self.refused_size, size)
        smaller = None
        if size > SMALLEST_REFUSED_SIZE and count < MAX_413_PER_RECORD:
            smaller = self._smaller(record, piece)
        if smaller is None:
            self._report.log_cause(
                ("413-floor", record.kind),
                "error",
                "%s refuses requests of %d bytes as too large (HTTP 413): its body size limit is below that. "
                "Raise it (e.g. nginx client_max_body_size, or the Collector's max_request_body_size); the "
                "request was set aside.",
                redact_url(url),
                size,
            )
        return smaller

    def _smaller(self, record: Record, piece: Piece) -> Optional[List[Piece]]:
        halves = piece.payload.split()
        if halves is not None:
            self._report.count("requests_split")
            return [self.piece(record, half) for half in halves]
        current = len(piece.payload.body)
        smaller = piece.payload.truncated(max(1024, current // 2))
        if smaller is None or len(smaller.body) >= current:
            return None
        self._report.truncated(record.kind, self.refused_size)
        return [self.piece(record, smaller)]
