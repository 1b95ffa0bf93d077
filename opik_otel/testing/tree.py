"""Printable trace trees, with orphaned spans marked."""

from collections import defaultdict
from typing import Dict, List, Optional, Sequence

from opik_otel.testing.records import SpanRecord, TraceRecord


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
