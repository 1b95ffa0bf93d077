"""The rows LocalOpik stores, shaped like Opik's traces, spans and request log."""

import dataclasses
from typing import Any, Dict, List, Optional

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
