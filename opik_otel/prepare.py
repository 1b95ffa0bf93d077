"""Preparing a batch for Opik: the first stage of the export path.

Pure functions from finished spans to what is sent: spans that ``span_filter`` or
``sample_rate`` left out dropped, values masked, private markers stripped, ids and
values made sendable, trace-level options (the exporter's and a ``trace_attributes``
block's) written on root spans, and the trace rows of the traces this process minted.
Nothing here does I/O.
"""

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from opentelemetry.sdk.trace import ReadableSpan

from ._logging import get_logger
from .attributes import DROPPED_SPAN, MINTED_TRACE, OPIK_TRACE_ID, PROJECT_NAME, SAMPLED_OUT, TRACE_ATTRIBUTES
from .linkage import span_attributes
from .projects import usable_project_name
from .jsontext import dump_json
from .masking import REDACTED, Masker, registered_anonymizers
from .spans import (
    ID_ATTRIBUTES,
    USAGE_PREFIX,
    changed_attributes,
    copy_span,
    distinct_span_id_fix,
    id_fix,
    is_invalid_usage,
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


# What preparing a span does for an attribute key (flags; most keys have none).
_USAGE, _MARKER, _ID, _SECRET, _JSON = 1, 2, 4, 8, 16
_SPECIAL_KEYS = {
    **{key: _MARKER for key in PRIVATE_MARKERS},
    **{key: _ID for key in ID_ATTRIBUTES},
    OPIK_METADATA: _JSON,
    OPIK_TAGS: _JSON,
}
_MEMO_LIMIT = 4096


class BatchPreparer:
    """Prepares the batches of one exporter (one process: a forked child makes its own).

    Remembers, per attribute key, what the key needs (a usage check, an id check, a
    private marker, scrubbing), so that a span costs one pass over its keys; the id
    strings found canonical, which the spans of a trace repeat; and the recent Opik
    span ids, to catch one given to two spans.
    """

    def __init__(self, options: TraceOptions, masker: Optional[Masker] = None) -> None:
        self._options = options
        self._masker = masker
        self._seen_span_ids: Dict[str, int] = {}
        self._rules: Dict[str, int] = {}
        self._canonical_ids: Dict[str, None] = {}

    def prepare(self, spans: Sequence[ReadableSpan]) -> PreparedBatch:
        """Leave out filtered and sampled-out spans, mask values, strip private markers,
        add trace-level options to root spans, make ids sendable, collect trace rows.

        Attribute values the encoder cannot take are repaired by the encoder itself, and
        masked attribute values go into the changes, so spans are only copied where a
        name or key is not text or masking changed an event or link."""
        options = self._options
        prepared: List[ReadableSpan] = []
        all_changes: List[Dict[str, Any]] = []
        rows: List[Dict[str, Any]] = []
        projects: List[Optional[str]] = []
        checked: Dict[Any, Optional[str]] = {}
        canonical_ids = self._canonical_ids
        masker = self._masker if self._masker is not None and self._masker.active else None
        anonymizers = registered_anonymizers() if masker is not None else []
        rewrites_values = masker is not None and masker.rewrites_values(anonymizers)
        for span in spans:
            attributes = span_attributes(span)
            special = self._special_keys(attributes)
            if special is None or type(span.name) is not str:
                span = with_text_keys_and_name(span)
                attributes = span_attributes(span)
                special = self._special_keys(attributes) or []
            if attributes.get(SAMPLED_OUT) is True:
                continue
            minted = attributes.get(MINTED_TRACE) is True
            is_root = span.parent is None
            dropped = attributes.get(DROPPED_SPAN) is True
            if dropped and not (minted and is_root):
                continue  # filtered out; no row to write from it either
            if masker is not None:
                events, links = masker.events_and_links(span, anonymizers)
                if events is not None or links is not None:
                    span = copy_span(span, events=events, links=links)
            changes: Dict[str, Any] = {}
            json_text = False
            for key, rule in special:
                json_text = json_text or bool(rule & _JSON)
                if rule & _MARKER or (rule & _USAGE and is_invalid_usage(key, attributes[key])):
                    changes[key] = None
                elif rule & _ID:
                    value = attributes[key]
                    # The spans of a trace repeat its id and their parents' ids.
                    if (type(value) is not str or value not in canonical_ids) and id_fix(key, value, changes):
                        if len(canonical_ids) >= _MEMO_LIMIT:
                            canonical_ids.clear()
                        canonical_ids[value] = None
            project = None
            if PROJECT_NAME in attributes:
                raw = attributes[PROJECT_NAME]
                if raw not in checked:
                    checked[raw] = usable_project_name(raw) if isinstance(raw, str) else None
                project = checked[raw]
            distinct_span_id_fix(span, changes, self._seen_span_ids)
            root = root_trace_options(attributes, options) if is_root else options
            if is_root and (minted or OPIK_TRACE_ID not in attributes):
                changes.update(root_options(attributes, root, thread_wins=root.thread_id != options.thread_id))
            if rewrites_values:
                masker.attribute_changes(attributes, changes, anonymizers)  # type: ignore[union-attr]
            elif masker is not None:
                for key, rule in special:
                    if rule & _SECRET and key not in changes:
                        changes[key] = REDACTED
            if json_text or OPIK_METADATA in changes or OPIK_TAGS in changes:
                strict_json_fixes(attributes, changes)
            if minted and is_root:
                row = trace_row(span, sendable_attributes(attributes, changes), root, project)
                if row is not None:
                    rows.append(row)
            if not dropped:
                prepared.append(span)
                all_changes.append(changes)
                projects.append(project)
        # Resources and scopes are hashed to group spans: a broken one must be repaired first.
        return PreparedBatch(sendable_surroundings(prepared), all_changes, rows, projects)

    def _special_keys(self, attributes: Mapping[str, Any]) -> Optional[List[Tuple[str, int]]]:
        """The keys of ``attributes`` that need more than encoding, with what they
        need; ``None`` if a key is not text."""
        rules = self._rules
        special = []
        for key in attributes:
            if type(key) is not str:
                return None
            rule = rules.get(key)
            if rule is None:
                rule = self._learn(key)
            if rule:
                special.append((key, rule))
        return special

    def _learn(self, key: str) -> int:
        rule = _SPECIAL_KEYS.get(key, 0)
        if key.startswith(USAGE_PREFIX):
            rule |= _USAGE
        if self._masker is not None and self._masker.is_secret(key):
            rule |= _SECRET
        if len(self._rules) >= _MEMO_LIMIT:
            self._rules.clear()
        self._rules[key] = rule
        return rule


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


def sendable_attributes(attributes: Mapping[str, Any], changes: Mapping[str, Any]) -> Dict[str, Any]:
    """A span's attributes as they are sent: ``changes`` applied and unencodable
    values repaired."""
    fixes = dict(changes)
    value_fixes(attributes, fixes)
    return changed_attributes(attributes, fixes)


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
    root: ReadableSpan, attributes: Mapping[str, Any], options: TraceOptions, project: Optional[str] = None
) -> Optional[Dict[str, Any]]:
    """The REST trace row of a minted root span whose attributes are sent as
    ``attributes``, or ``None`` (logged) when it cannot be built."""
    try:
        return trace_row_from_span(
            root,
            attributes=attributes,
            project_name=project or options.project_name,
            tags=options.tags,
            metadata=options.metadata,
            thread_id=options.thread_id,
        )
    except ValueError as error:
        # Predictable bad input (a marker attribute set by user code): no traceback.
        LOGGER.warning("Could not build an Opik trace row from a root span: %s", error)
        return None
