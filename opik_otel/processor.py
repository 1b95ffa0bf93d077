"""``OpikSpanProcessor``: carries Opik trace linkage down an OTel subtree.

``attach_to_parent`` (or the ``opik`` propagator, or an upstream service's baggage)
puts Opik ids on a boundary span only. The backend reads ``opik.*`` attributes span
by span, so without this processor every descendant of that boundary would land in a
trace Opik derives on its own, apart from its parent. On each span start the
processor finds the linkage the new span inherits (see
:func:`opik_otel.linkage.resolve_linkage`) and stamps the span with the trace id, a
fresh ``opik.span_id`` and its parent's Opik id.
"""

import sys
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Protocol, Set, Tuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace.propagation import _SPAN_KEY

from ._logging import get_logger
from .attributes import MINTED_TRACE, OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID, PROJECT_NAME
from .ids import IdGenerator
from .linkage import (
    PROPAGATED_LINKAGE_KEY,
    Linkage,
    baggage_linkage,
    context_linkage,
    current_context_getter,
    is_local_root,
    opik_context_project,
    opik_span_stack,
    parent_span_linkage,
    span_attributes,
)
from .projects import usable_project_name
from .trace_attributes import TRACE_ATTRIBUTES_KEY

if TYPE_CHECKING:
    from .filtering import SpanFilter

LOGGER = get_logger(__name__)

_CANONICAL_ID_LENGTH = 36

# Bound of OpikSpanProcessor's memo of checked ids (about 100 kB when full): far more
# than the traces and open parent spans a process has at once.
_MAX_KNOWN_IDS = 1024


class RootStartSink(Protocol):
    """What writes a minted trace's row when its root starts (``OpikExporter``)."""

    def root_started(self, span: ReadableSpan) -> None:
        """Take note of a minted root that has just started; must return at once."""


def minted_root_attributes(span: Span, ids: IdGenerator, project_name: Optional[str] = None) -> Dict[str, Any]:
    """Opik ids for a new trace rooted at ``span``, marked for trace-row creation."""
    start_ms = (span.start_time or 0) // 1_000_000 or None
    attributes: Dict[str, Any] = {
        OPIK_TRACE_ID: ids.new_id(start_ms),
        OPIK_SPAN_ID: ids.new_id(start_ms),
        MINTED_TRACE: True,
    }
    if project_name is not None:
        attributes[PROJECT_NAME] = project_name
    return attributes


def set_linkage_attributes(span: Span, attributes: Dict[str, Any]) -> None:
    """Set Opik id attributes on a span from ``SpanProcessor.on_start``.

    ``Span.set_attributes`` re-validates every value and costs as much as a third of
    a bare span's whole life; these values are canonical id strings (and one bool), so when the
    span's attribute store is the SDK's own and has room within its limits they go
    straight into it. No lock: until ``start_span`` returns, no other code holds the
    span, so nothing can end it or write to it concurrently. Anything else takes the
    public path.
    """
    store = getattr(span, "_attributes", None)
    if (
        type(store) is BoundedAttributes
        and not store._immutable
        and (store.maxlen is None or len(store._dict) + len(attributes) <= store.maxlen)
        and (store.max_value_len is None or store.max_value_len >= _CANONICAL_ID_LENGTH)
        and span._end_time is None
    ):
        store._dict.update(attributes)
        return
    span.set_attributes(attributes)


class OpikSpanProcessor(SpanProcessor):
    """Stamp every span of an Opik subtree with ``opik.*`` ids as it starts.

    Register it on the same ``TracerProvider`` as the exporting processor; the order
    does not matter. It keeps no per-span state, so one instance serves any number of
    threads and asyncio tasks.

    Every span is also stamped with the project of the trace it joins (the
    ``@opik.track`` span's project, or the one the caller's headers or baggage name),
    so that ``OpikExporter`` writes it to that project.

    Args:
        mint_root_ids: also give every local root span (no parent at all, no inherited
            linkage) a fresh Opik trace id and span id, so an OTel-first service can
            hand its trace to downstream services. Their trace rows are written by
            ``OpikExporter``. Defaults to ``True`` when ``exporter`` is given.
        exporter: the ``OpikExporter`` of the same provider (what
            ``opik_otel.configure`` wires for you). Minted traces then go to its
            project, and their trace rows and root spans are written as soon as the
            root starts instead of when it ends, so children are never orphans, even
            when the process dies before the root ends.
        span_filter: which spans reach Opik: ``None`` (all), ``"llm"`` (LLM spans,
            spans linked from Opik and local roots) or a callable ``(span) -> bool``
            called as each span starts. A dropped span's kept descendants chain to its
            nearest kept ancestor; its trace row is still written. Needs
            ``OpikExporter`` (which leaves dropped spans out) and mints root ids.
        sample_rate: fraction (0..1) of local roots whose traces are kept, decided
            per trace id; spans linked to an Opik trace from upstream are always kept.
            ``configure()`` passes its own ``sample_rate`` here.
    """

    def __init__(
        self,
        mint_root_ids: Optional[bool] = None,
        exporter: Optional[RootStartSink] = None,
        span_filter: "SpanFilter" = None,
        sample_rate: Optional[float] = None,
    ) -> None:
        self._mint_root_ids = exporter is not None if mint_root_ids is None else bool(mint_root_ids)
        self._exporter = exporter
        config = getattr(exporter, "config", None)
        self._project_name = usable_project_name(getattr(config, "project_name", None))
        if self._mint_root_ids and exporter is None:
            LOGGER.warning(
                "OpikSpanProcessor(mint_root_ids=True) has no exporter=: minted traces get their Opik "
                "trace rows only when their root span ends and reaches an OpikExporter, so their spans are "
                "orphans until then (for ever if the process dies first). Pass exporter=<your OpikExporter>, "
                "or use opik_otel.configure()."
            )
        self._ids = IdGenerator()
        self._new_id = self._ids.new_id
        # Canonical id strings this processor minted or checked: a child of a span it
        # stamped then skips two UUIDv7 checks. Holds canonical strings only.
        self._known_ids: Set[str] = set()
        # The last baggage mapping that gave a linkage, with that linkage (it holds the
        # mapping, so an identity check cannot match a new one at a reused address).
        self._baggage_memo: Tuple[Any, Optional[Linkage]] = (None, None)
        self._current_context = current_context_getter()
        self._from_baggage = self._baggage_linkage  # bound once, not on every span start
        # Found once the application imports opik; spans outside any tracked function
        # then cost one read of it instead of a walk through the SDK's modules.
        self._opik_spans: Any = None
        self._shaper: Any = None
        if span_filter is not None or sample_rate is not None:
            # Imported here: shaping builds on this module's helpers.
            from .filtering import validated_span_filter
            from .sampling import validated_sample_rate
            from .shaping import SpanShaper

            span_filter = validated_span_filter(span_filter)
            rate = validated_sample_rate(sample_rate)
            if span_filter is not None or rate is not None:
                self._shaper = SpanShaper(
                    span_filter, rate, self._mint_root_ids, self._ids, self._root_attributes, self._root_started
                )
                # An instance attribute: the unshaped path below pays nothing for it.
                self.on_start = self._shaped_on_start  # type: ignore[method-assign]

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        # resolve_linkage() inlined, with the stamping: this runs for every span, and
        # each Python call saved is a few percent of a bare span's cost.
        try:
            context = self._current_context() if parent_context is None else parent_context
            parent = context.get(_SPAN_KEY)
            trace_id: Any = None
            parent_span_id: Any = None
            checked = False  # whether trace_id and parent_span_id are known ids already
            if parent is not None:
                store = getattr(parent, "_attributes", None)
                if type(store) is BoundedAttributes:
                    attributes = store._dict
                    trace_id = attributes.get(OPIK_TRACE_ID)
                    if trace_id is not None or OPIK_SPAN_ID in attributes:
                        parent_span_id = attributes.get(OPIK_SPAN_ID)
                        known = self._known_ids
                        # type() first: extended attribute values may be unhashable dicts.
                        if (
                            type(trace_id) is str
                            and trace_id in known
                            and type(parent_span_id) is str
                            and parent_span_id in known
                        ):
                            project = attributes.get(PROJECT_NAME)
                            if type(project) is not str:
                                project = None
                            checked = True
                        else:
                            linkage = parent_span_linkage(attributes)
                            if linkage is None:
                                return
                            trace_id, parent_span_id, project = linkage
                else:
                    other = span_attributes(parent)
                    if OPIK_TRACE_ID in other or OPIK_SPAN_ID in other:
                        linkage = parent_span_linkage(other)
                        if linkage is None:
                            return
                        trace_id, parent_span_id, project = linkage
            if trace_id is None:
                opik_spans = self._opik_spans
                if opik_spans is None and "opik.context_storage" in sys.modules:
                    opik_spans = self._opik_spans = opik_span_stack()
                # context_linkage()'s answer, without calling it, in the two common cases:
                # no signal at all, or the baggage of the previous linked span.
                entries = context.get(_BAGGAGE_KEY)
                memo = self._baggage_memo  # read once: another thread may replace it
                if context.get(PROPAGATED_LINKAGE_KEY) is not None:
                    linkage = context_linkage(context, opik_spans, self._from_baggage)
                elif entries is not None and entries is memo[0]:
                    linkage = memo[1]
                    checked = True
                elif not entries and opik_spans is not None and not opik_spans.get():
                    linkage = None
                else:
                    linkage = context_linkage(context, opik_spans, self._from_baggage)
                if linkage is None:
                    if self._mint_root_ids and is_local_root(context):
                        set_linkage_attributes(span, self._root_attributes(span, context))
                        self._root_started(span)
                    return
                trace_id, parent_span_id, project = linkage
            start_ns = span._start_time
            span_id = self._new_id(start_ns // 1_000_000 if start_ns else None)
            new = {OPIK_TRACE_ID: trace_id, OPIK_SPAN_ID: span_id}
            if parent_span_id is not None:
                new[OPIK_PARENT_SPAN_ID] = parent_span_id
            if project is not None:
                new[PROJECT_NAME] = project
            # All three ids are canonical now: remembered, so that this span's children
            # skip checking them. Ids taken from a memo were added when first checked;
            # if the memo was emptied since, the next children simply check them again.
            known = self._known_ids
            if len(known) > _MAX_KNOWN_IDS - 3:
                known.clear()  # enough to bound it: the next children check their ids again
                checked = False
            known.add(span_id)
            if not checked:
                known.add(trace_id)
                if parent_span_id is not None:
                    known.add(parent_span_id)
            set_linkage_attributes(span, new)
        except Exception:  # a telemetry hook must never break the traced code
            LOGGER.warning("Could not apply Opik linkage to a span.", exc_info=True)

    def _baggage_linkage(self, entries: Mapping[str, Any]) -> Optional[Linkage]:
        """:func:`baggage_linkage`, reused while spans start in the same baggage.

        The baggage API never changes a mapping it has put in a context (setting an
        entry makes a new one), and a request's spans all share its mapping. Only a
        valid linkage is kept, so bad baggage is warned about as before.
        """
        memo = self._baggage_memo
        if memo[0] is entries:
            return memo[1]
        linkage = baggage_linkage(entries)
        if linkage is not None:
            self._baggage_memo = (entries, linkage)
        return linkage

    def _root_attributes(self, span: Span, context: Context) -> Dict[str, Any]:
        """Opik ids of a new trace rooted at ``span``, with its project and the
        ``trace_attributes(...)`` active in ``context``."""
        # Opik's project rule: an enclosing opik.project_context() wins over the
        # configured project. Looked up only for roots, and only when opik is imported.
        context_storage = sys.modules.get("opik.context_storage")
        project = opik_context_project(context_storage) if context_storage is not None else None
        attributes = minted_root_attributes(span, self._ids, project or self._project_name)
        values: Any = context.get(TRACE_ATTRIBUTES_KEY)
        if values is not None:
            attributes.update(values.span_attributes)  # trace_attributes(project_name=...) wins
        return attributes

    def _root_started(self, span: Span) -> None:
        if self._exporter is not None:
            self._exporter.root_started(span)

    def _shaped_on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        """``on_start`` when ``span_filter`` or ``sample_rate`` is set."""
        try:
            self._shaper.on_start(span, parent_context)
        except Exception:  # a telemetry hook must never break the traced code
            LOGGER.warning("Could not apply Opik linkage to a span.", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        """Stop minting trace ids: no exporter would write their trace rows any more.

        Linkage inherited from parents, headers, baggage or ``@opik.track`` still
        applies, so spans started later stay in their traces.
        """
        self._mint_root_ids = False
        if self._shaper is not None:
            self._shaper.stop_minting()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
