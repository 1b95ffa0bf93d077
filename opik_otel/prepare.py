"""Preparing a batch for Opik: the first stage of the export path.

Pure functions from finished spans to what is sent: spans that ``span_filter`` or
``sample_rate`` left out dropped, values masked, private markers stripped, ids and
values made sendable, trace-level options (the exporter's and a ``trace_attributes``
block's) written on root spans, and the trace rows of the traces this process minted.
Nothing here does I/O.
"""

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan

from ._logging import get_logger
from .attributes import DROPPED_SPAN, MINTED_TRACE, OPIK_TRACE_ID, PROJECT_NAME, SAMPLED_OUT, TRACE_ATTRIBUTES
from .linkage import span_attributes
from .projects import usable_project_name
from .jsontext import dump_json
from .masking import Masker
from .spans import (
    copy_span,
    distinct_span_id_fix,
    id_fixes,
    invalid_usage_removals,
    sendable_span,
    sendable_surroundings,
    strict_json_fixes,
    value_fixes,
    with_text_keys_and_name,
)
from .trace_rows import (
    OPIK_METADATA,
    OPIK_TAGS,
    THREAD_ID_ATTRIBUTES,
    merge_metadata,
    merge_tags,
    trace_row_from_span,
)
from .trace_attributes import trace_options

LOGGER = get_logger(__name__)

# Private attributes of this package: never exported (Opik would store them as input).
PRIVATE_MARKERS = (MINTED_TRACE, DROPPED_SPAN, SAMPLED_OUT, TRACE_ATTRIBUTES, PROJECT_NAME)


@dataclass(frozen=True)
class TraceOptions:
    """What the exporter adds to every trace it roots."""

    project_name: str
    tags: List[str] = field(default_factory=list)
    metadata: Dict[str, Any] = field(default_factory=dict)
    thread_id: Optional[str] = None


@dataclass
class PreparedBatch:
    """Spans ready to encode with their attribute changes, and the trace rows to write
    before them.

    ``projects[i]`` is the project ``spans[i]`` names (its trace's), ``None`` for the
    exporter's own."""

    spans: List[ReadableSpan]
    # Per span: attributes to set (``None`` removes), applied by the encoder as it writes.
    changes: List[Dict[str, Any]]
    rows: List[Dict[str, Any]]
    projects: List[Optional[str]] = field(default_factory=list)


def prepare_batch(
    spans: Sequence[ReadableSpan],
    options: TraceOptions,
    seen_span_ids: Dict[str, int],
    masker: Optional[Masker] = None,
) -> PreparedBatch:
    """Leave out filtered and sampled-out spans, mask values, strip private markers,
    add trace-level options to root spans, make ids sendable, collect trace rows.

    Attribute values the encoder cannot take are repaired by the encoder itself, and
    masked attribute values go into the changes, so spans are only copied where a name
    or key is not text or masking changed an event or link."""
    prepared: List[ReadableSpan] = []
    all_changes: List[Dict[str, Any]] = []
    rows: List[Dict[str, Any]] = []
    projects: List[Optional[str]] = []
    checked: Dict[Any, Optional[str]] = {}
    if masker is not None and not masker.active:
        masker = None
    for span in spans:
        span = with_text_keys_and_name(span)
        attributes = span_attributes(span)
        if attributes.get(SAMPLED_OUT) is True:
            continue
        minted = attributes.get(MINTED_TRACE) is True
        is_root = span.parent is None
        dropped = attributes.get(DROPPED_SPAN) is True
        if dropped and not (minted and is_root):
            continue  # filtered out; no row to write from it either
        if masker is not None:
            events, links = masker.events_and_links(span)
            if events is not None or links is not None:
                span = copy_span(span, events=events, links=links)
        changes = invalid_usage_removals(attributes)
        for marker in PRIVATE_MARKERS:
            if marker in attributes:
                changes[marker] = None
        project = None
        if PROJECT_NAME in attributes:
            raw = attributes[PROJECT_NAME]
            if raw not in checked:
                checked[raw] = usable_project_name(raw) if isinstance(raw, str) else None
            project = checked[raw]
        id_fixes(attributes, changes)
        distinct_span_id_fix(span, changes, seen_span_ids)
        root = root_trace_options(attributes, options) if is_root else options
        if is_root and (minted or OPIK_TRACE_ID not in attributes):
            changes.update(root_options(attributes, root, thread_wins=root.thread_id != options.thread_id))
        if masker is not None:
            masker.attribute_changes(attributes, changes)
        strict_json_fixes(attributes, changes)
        if minted and is_root:
            row = trace_row(sendable_copy(span, changes), root, project)
            if row is not None:
                rows.append(row)
        if not dropped:
            prepared.append(span)
            all_changes.append(changes)
            projects.append(project)
    # Resources and scopes are hashed to group spans: a broken one must be repaired first.
    return PreparedBatch(sendable_surroundings(prepared), all_changes, rows, projects)


def root_trace_options(attributes: Mapping[str, Any], options: TraceOptions) -> TraceOptions:
    """The options of the trace a root span starts: the exporter's, with those of the
    ``trace_attributes(...)`` block it started in (tags added, the rest winning)."""
    if TRACE_ATTRIBUTES not in attributes and PROJECT_NAME not in attributes:
        return options
    tags, metadata, thread_id = trace_options(options.tags, options.metadata, options.thread_id, attributes)
    project = attributes.get(PROJECT_NAME)
    return replace(
        options,
        project_name=project if isinstance(project, str) and project else options.project_name,
        tags=tags,
        metadata=metadata,
        thread_id=thread_id,
    )


def sendable_copy(span: ReadableSpan, changes: Mapping[str, Any]) -> ReadableSpan:
    """``span`` as it is sent: ``changes`` applied and unencodable values repaired."""
    fixes = dict(changes)
    value_fixes(span_attributes(span), fixes)
    return sendable_span(span, fixes)


def root_options(attributes: Mapping[str, Any], options: TraceOptions, thread_wins: bool = False) -> Dict[str, Any]:
    """Trace-level options, written on a root span the way Opik reads them from it.

    ``thread_wins``: the thread comes from a ``trace_attributes(...)`` block and
    replaces the span's own; the exporter's configured thread does not."""
    changes: Dict[str, Any] = {}
    if options.tags:
        changes[OPIK_TAGS] = merge_tags(options.tags, attributes.get(OPIK_TAGS))
    if options.metadata:
        # Only the opik.metadata blob: opik.metadata.<key> attributes stay as they are.
        blob = {OPIK_METADATA: attributes[OPIK_METADATA]} if OPIK_METADATA in attributes else {}
        changes[OPIK_METADATA] = dump_json(merge_metadata(options.metadata, blob))
    if options.thread_id and (thread_wins or not any(key in attributes for key in THREAD_ID_ATTRIBUTES)):
        changes[THREAD_ID_ATTRIBUTES[0]] = options.thread_id
    return changes


def trace_row(
    root: ReadableSpan, options: TraceOptions, project: Optional[str] = None
) -> Optional[Dict[str, Any]]:
    """The REST trace row of a minted root span, or ``None`` (logged) when it cannot be built."""
    try:
        return trace_row_from_span(
            root,
            project_name=project or options.project_name,
            tags=options.tags,
            metadata=options.metadata,
            thread_id=options.thread_id,
        )
    except ValueError as error:
        # Predictable bad input (a marker attribute set by user code): no traceback.
        LOGGER.warning("Could not build an Opik trace row from a root span: %s", error)
        return None
