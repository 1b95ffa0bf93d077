"""What waits in a delivery queue, and how one record is laid out in a file.

A record keeps only the routing of a request (kind, destination, project, workspace,
content type and encoding) and its body. Credentials and custom headers are never part
of it: the sender adds them as configured at the moment it sends, so a rotated key is
used for old data and no secret ever reaches the disk.

File layout: one ASCII line ``OPIKQUEUE1 {json header}\\n`` followed by the body bytes.
The header carries the body's length and CRC-32, so a truncated or damaged file is
recognised instead of being sent.
"""

import json
import zlib
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

# "spans": an OTLP/protobuf export request; "traces": a REST trace-rows JSON batch.
RECORD_KINDS = frozenset({"spans", "traces"})

MAGIC = b"OPIKQUEUE1 "
# A header line longer than this is not one this package wrote.
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Record:
    """One request waiting to be sent; nothing secret in it.

    Attributes:
        kind: ``"spans"`` (OTLP protobuf) or ``"traces"`` (REST trace-rows JSON).
        body: the request body exactly as it will be POSTed (already compressed when
            ``content_encoding`` is set).
        destination: URL to POST to, without credentials.
        project: Opik project the request goes to (``None``: the server's default).
        workspace: Opik workspace.
        content_type: value of the ``Content-Type`` header.
        content_encoding: value of the ``Content-Encoding`` header, or ``None``.
        items: spans (or trace rows) the body carries, for "N spans wait" messages.
    """

    kind: str
    body: bytes
    destination: str
    project: Optional[str]
    workspace: str
    content_type: str
    content_encoding: Optional[str]
    items: int


@dataclass(frozen=True)
class StoredRecord:
    """A :class:`Record` as held by a queue, with where the queue keeps it.

    ``locator`` is opaque to callers: hand the object back to the queue's ``remove``
    or ``quarantine``.
    """

    record: Record
    locator: str


def record_problem(record: Record) -> Optional[str]:
    """Why ``record`` cannot be queued or sent as it is, or ``None`` when it can."""
    if not isinstance(record, Record):
        return "not a Record"
    if record.kind not in RECORD_KINDS:
        return f"unknown kind {record.kind!r}"
    if not isinstance(record.body, bytes):
        return "body is not bytes"
    if not isinstance(record.items, int) or isinstance(record.items, bool) or record.items < 0:
        return "items is not a non-negative integer"
    problem = _destination_problem(record.destination)
    if problem:
        return problem
    for name, value, optional in (
        ("project", record.project, True),
        ("workspace", record.workspace, False),
        ("content type", record.content_type, False),
        ("content encoding", record.content_encoding, True),
    ):
        if value is None and optional:
            continue
        if not is_header_value(value):
            return f"{name} cannot be sent as an HTTP header value"
    return None


def storable(record: Record) -> Tuple[Record, Optional[str]]:
    """``record`` as a queue keeps it (URL credentials removed), and why it cannot be
    kept (``None`` when it can)."""
    destination = getattr(record, "destination", None)
    if isinstance(record, Record) and isinstance(destination, str) and "@" in destination:
        record = replace(record, destination=without_credentials(destination))
    return record, record_problem(record)


def is_header_value(value: object) -> bool:
    """Whether ``value`` is a non-empty string an HTTP client accepts as a header value."""
    if not isinstance(value, str) or not value or value != value.strip():
        return False
    return not any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` part removed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _destination_problem(destination: object) -> Optional[str]:
    if not isinstance(destination, str) or not is_header_value(destination):
        return "destination is not a URL"
    try:
        parts = urlsplit(destination)
    except ValueError:
        return "destination is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "destination is not an http(s) URL"
    if "@" in parts.netloc:
        return "destination carries credentials"
    return None


def encode_header(record: Record) -> bytes:
    """The header line written before ``record.body`` in a record file."""
    header = {
        "kind": record.kind,
        "destination": record.destination,
        "project": record.project,
        "workspace": record.workspace,
        "content_type": record.content_type,
        "content_encoding": record.content_encoding,
        "items": record.items,
        "length": len(record.body),
        "crc32": zlib.crc32(record.body),
    }
    # ASCII-only JSON holds no raw newline, so the first newline ends the header.
    return MAGIC + json.dumps(header, separators=(",", ":")).encode("ascii") + b"\n"


def decode_record(data: bytes) -> Tuple[Optional[Record], str]:
    """Parse a record file: ``(record, "")``, or ``(None, why it is not a valid record)``."""
    if not data.startswith(MAGIC):
        return None, "not a queue record (bad magic)"
    end = data.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        return None, "header line missing or too long"
    try:
        header = json.loads(data[len(MAGIC) : end].decode("ascii"), parse_constant=_refuse_constant)
    except ValueError:
        return None, "header is not JSON"
    if not isinstance(header, dict):
        return None, "header is not a JSON object"
    body = data[end + 1 :]
    length, crc = header.get("length"), header.get("crc32")
    if not _is_int(length) or not _is_int(crc):
        return None, "header lacks length or checksum"
    if len(body) != length:
        return None, f"body is {len(body)} bytes, header says {length} (truncated?)"
    if zlib.crc32(body) != crc:
        return None, "body checksum mismatch (damaged)"
    record = _record_from_header(header, body)
    if record is None:
        return None, "header fields have the wrong types"
    problem = record_problem(record)
    if problem:
        return None, problem
    return record, ""


def _record_from_header(header: Dict[str, Any], body: bytes) -> Optional[Record]:
    fields = ("kind", "destination", "workspace", "content_type")
    if not all(isinstance(header.get(name), str) for name in fields):
        return None
    for name in ("project", "content_encoding"):
        if header.get(name) is not None and not isinstance(header.get(name), str):
            return None
    if not _is_int(header.get("items")):
        return None
    return Record(
        kind=header["kind"],
        body=body,
        destination=header["destination"],
        project=header.get("project"),
        workspace=header["workspace"],
        content_type=header["content_type"],
        content_encoding=header.get("content_encoding"),
        items=header["items"],
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
