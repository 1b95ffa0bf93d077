"""What Opik would store: trace and span rows per workspace and project, written by
OTLP and REST ingest under the backend's rules, and the queries tests ask of them."""

import copy
import dataclasses
import json
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from opik_otel.ids import canonical_uuid_v7
from opik_otel.testing.decoding import HttpError, span_from_rest, trace_from_rest
from opik_otel.testing.mapping import (
    IncomingSpan,
    decode_attributes,
    derived_uuid_v7,
    error_info,
    incoming_spans,
    integration_name,
    iso_from_unix_nano,
    resolve_span_ids,
)
from opik_otel.testing.records import RequestRecord, SpanRecord, TraceRecord
from opik_otel.testing.tree import render_tree

TRACES_BATCH_PATH = "/api/v1/private/traces/batch"


@dataclasses.dataclass
class _CachedTraceId:
    trace_id: str
    timestamp_ms: int
    last_used: float


class OpikStore:
    """Trace and span rows as Opik would store them, with the backend's ingest rules.

    Args:
        workspace: workspace assumed when a request names none.
        trace_id_ttl_seconds: lifetime of a derived trace id in the cache (see
            :class:`~opik_otel.testing.LocalOpik`).

    Thread safe: every read and write holds one condition's lock.
    """

    def __init__(self, workspace: str, trace_id_ttl_seconds: Optional[float]) -> None:
        self.default_workspace = workspace
        self.trace_id_ttl_seconds = trace_id_ttl_seconds
        self._cond = threading.Condition(threading.RLock())
        self._traces: Dict[Tuple[str, str, str], TraceRecord] = {}
        self._spans: Dict[Tuple[str, str, str], SpanRecord] = {}
        self._projects: Dict[Tuple[str, str], None] = {}  # insertion-ordered set
        self._requests: List[RequestRecord] = []
        self._warnings: List[str] = []
        self._trace_id_cache: Dict[Tuple[str, str, bytes], _CachedTraceId] = {}
        self._stats = self._empty_stats()

    # ------------------------------------------------------------------- ingest

    def _ingest_otlp(self, request: ExportTraceServiceRequest, project: str, workspace: str) -> None:
        try:
            incoming = incoming_spans(request)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        integration = integration_name(request)
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
        item: IncomingSpan,
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
                    "attributes": decode_attributes(event.attributes),
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
            start_time=iso_from_unix_nano(span.start_time_unix_nano),
            end_time=iso_from_unix_nano(span.end_time_unix_nano),
            type="llm" if (mapped.model or mapped.provider) else "general",
            input=mapped.input,
            output=mapped.output,
            metadata=metadata,
            tags=mapped.tags,
            usage=mapped.usage,
            total_cost=mapped.total_cost,
            model=mapped.model,
            provider=mapped.provider,
            error_info=error_info(span),
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
            raise HttpError(400, f"body is not JSON: {exc}") from exc
        items = document.get(kind) if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise HttpError(400, f'body must be {{"{kind}": [...]}}')
        build: Callable[[Any, str, str], Any] = (
            trace_from_rest if kind == "traces" else span_from_rest
        )
        try:
            records = [build(item, project, workspace) for item in items]
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
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
