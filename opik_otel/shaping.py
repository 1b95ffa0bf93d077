"""Span start when ``span_filter`` or ``sample_rate`` is set: what to keep, and how the
kept spans chain past the dropped ones.

Only span-start bookkeeping happens here, on the application's thread, with no I/O:

- a dropped span gets the private :data:`~opik_otel.attributes.DROPPED_SPAN` marker and,
  as its ``opik.span_id``, the Opik id of its nearest kept ancestor, so its children
  (and ``get_distributed_trace_headers()`` / ``OpikPropagator`` inside it) name that
  ancestor as their parent; a dropped root carries no span id, so its kept descendants
  are top-level spans of its trace, whose row the exporter still writes;
- a sampled-out local root and everything under it get
  :data:`~opik_otel.attributes.SAMPLED_OUT` and no Opik ids; ``attach_to_parent``
  linking the root to an upstream trace clears the marker, and what starts after is
  kept.

The exporter leaves marked spans out (``OpikExporter`` preparation step).
"""

from typing import Any, Callable, Dict, Optional

from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace import Span
from opentelemetry.trace.propagation import _SPAN_KEY

from .attributes import DROPPED_SPAN, OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID, SAMPLED_OUT
from .filtering import LLM, SpanFilter, filter_predicate, keeps
from .ids import IdGenerator
from .linkage import resolve_linkage, span_attributes
from .processor import set_linkage_attributes
from .sampling import is_sampled, sampling_bound

_SAMPLED_OUT = {SAMPLED_OUT: True}


class SpanShaper:
    """Decides at span start what ``span_filter`` and ``sample_rate`` keep.

    Args:
        span_filter: ``None``, ``"llm"`` or a predicate (already validated).
        sample_rate: fraction of local roots kept, or ``None`` for all.
        mint_root_ids: give kept local roots fresh Opik ids (always on with a filter:
            re-parenting needs Opik ids).
        ids: the processor's id generator.
    """

    def __init__(
        self,
        span_filter: SpanFilter,
        sample_rate: Optional[float],
        mint_root_ids: bool,
        ids: IdGenerator,
        root_attributes: Callable[[Span, Context], Dict[str, Any]],
        root_started: Callable[[Span], None],
    ) -> None:
        self._ids = ids
        self._root_attributes = root_attributes
        self._root_started = root_started
        self._predicate = filter_predicate(span_filter)
        # "llm" always keeps boundaries and roots; a user predicate decides everything.
        self._keeps_boundaries = span_filter == LLM
        self._bound = None if sample_rate is None else sampling_bound(sample_rate)
        self._mint_root_ids = mint_root_ids or self._predicate is not None

    def on_start(self, span: Span, parent_context: Optional[Context]) -> None:
        context = get_current() if parent_context is None else parent_context
        parent: Any = context.get(_SPAN_KEY)
        parent_attributes = span_attributes(parent) if parent is not None else {}
        if SAMPLED_OUT in parent_attributes:
            set_linkage_attributes(span, _SAMPLED_OUT)
            return
        own = span_attributes(span)
        if OPIK_TRACE_ID in own:
            return  # started with explicit Opik ids: a boundary its creator placed
        from_parent = OPIK_TRACE_ID in parent_attributes or OPIK_SPAN_ID in parent_attributes
        linkage = resolve_linkage(context)
        if linkage is None:
            if parent is not None and parent.get_span_context().is_valid:
                return  # outside any Opik trace: no ids to re-parent with, keep as is
            self._start_local_root(span, context)
            return
        keep = self._keeps(span, boundary=not from_parent)
        attributes: Dict[str, Any] = {OPIK_TRACE_ID: linkage.trace_id}
        if keep:
            start_ns = span.start_time
            attributes[OPIK_SPAN_ID] = self._ids.new_id(start_ns // 1_000_000 if start_ns else None)
            if linkage.parent_span_id is not None:
                attributes[OPIK_PARENT_SPAN_ID] = linkage.parent_span_id
        else:
            attributes[DROPPED_SPAN] = True
            if linkage.parent_span_id is not None:
                attributes[OPIK_SPAN_ID] = linkage.parent_span_id
        set_linkage_attributes(span, attributes)

    def _start_local_root(self, span: Span, context: Context) -> None:
        if self._bound is not None and not is_sampled(span.get_span_context().trace_id, self._bound):
            set_linkage_attributes(span, _SAMPLED_OUT)
            return
        if not self._mint_root_ids:
            return
        attributes = self._root_attributes(span, context)
        if not self._keeps(span, boundary=True):
            # The row is still written from this span; its children become top-level.
            del attributes[OPIK_SPAN_ID]
            attributes[DROPPED_SPAN] = True
        set_linkage_attributes(span, attributes)
        self._root_started(span)

    def stop_minting(self) -> None:
        """No exporter writes rows any more (shutdown): stop minting root ids."""
        self._mint_root_ids = False

    def _keeps(self, span: Span, boundary: bool) -> bool:
        if self._predicate is None or (boundary and self._keeps_boundaries):
            return True
        return keeps(self._predicate, span)
