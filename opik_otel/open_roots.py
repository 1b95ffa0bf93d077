"""Minted traces whose root span has started but not ended.

Opik shows a span as an orphan while its trace row, or its parent, is missing. A
minted trace's row is normally written from its finished root span, and the root span
itself reaches Opik only once it ends, so the children of a long-running root (an
agent run) would be orphans until then, and for ever if the process died first.

``OpikSpanProcessor`` therefore reports each minted root as it starts
(``OpikExporter.root_started``); :class:`OpenRoots` remembers it, and the exporter
writes a provisional copy of the root (trace row without end time, root span) before
the first child of that trace it sends, or once the root has been open for a while.
When the root ends, the real row and span upsert the same ids. Roots still open at a
clean shutdown are written closed, with an error saying the process stopped.

Roots that end quickly (most requests) never need the provisional copy: the real one
is in the same batch as their children, ahead of them.
"""

import threading
import time
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Status, StatusCode

from .attributes import MINTED_TRACE, OPIK_TRACE_ID
from .linkage import span_attributes
from .spans import copy_span

# How long a root may stay open before its provisional copy is written even though
# none of its children has been exported: what a process that dies later still leaves
# visible in Opik.
OPEN_ROOT_DELAY_SECONDS = 1.0
# Roots whose end never reached the exporter (dropped from a full queue, never ended)
# are forgotten oldest first past this many.
MAX_OPEN_ROOTS = 10_000
PROCESS_STOPPED_MESSAGE = "The process stopped before this trace's root span ended."


class OpenRoot(NamedTuple):
    """A started minted root: the live span and its attributes as they were at start."""

    span: Any
    attributes: Mapping[str, Any]
    started_at: float  # time.monotonic()


def provisional_root(
    root: OpenRoot, *, end_time: Optional[int] = None, status: Optional[Status] = None
) -> ReadableSpan:
    """A finished copy of an open root span, to write before the root really ends.

    OTLP spans need an end time: without ``end_time`` the copy ends when it started
    (the exporter writes its trace row without an end time).
    """
    span = root.span
    start = span.start_time
    return copy_span(
        ReadableSpan(
            name=span.name,
            context=span.context,
            parent=None,
            resource=span.resource,
            kind=span.kind,
            status=status or Status(StatusCode.UNSET),
            start_time=start,
            end_time=start if end_time is None else end_time,
            instrumentation_scope=span.instrumentation_scope,
        ),
        attributes=root.attributes,
    )


def still_minted_root(root: OpenRoot, trace_id: str) -> bool:
    """Whether the live span still roots the trace minted for it.

    ``attach_to_parent`` may have moved it into an upstream trace since it started
    (that trace's row is its owner's to write).
    """
    attributes = span_attributes(root.span)
    return attributes.get(MINTED_TRACE) is True and attributes.get(OPIK_TRACE_ID) == trace_id


def stopped_status() -> Status:
    """The status of a root written closed at shutdown."""
    return Status(StatusCode.ERROR, PROCESS_STOPPED_MESSAGE)


class OpenRoots:
    """Thread-safe registry of open minted roots, keyed by Opik trace id."""

    def __init__(self, max_roots: int = MAX_OPEN_ROOTS) -> None:
        self._lock = threading.Lock()
        self._roots: "OrderedDict[str, OpenRoot]" = OrderedDict()
        self._written: Dict[str, bool] = {}
        self._max_roots = max_roots

    def __len__(self) -> int:
        with self._lock:
            return len(self._roots)

    def add(self, span: Any) -> None:
        """Remember a root that has just started (runs on the application's thread)."""
        attributes = dict(span_attributes(span))
        trace_id = attributes.get(OPIK_TRACE_ID)
        if not isinstance(trace_id, str):
            return
        root = OpenRoot(span, attributes, time.monotonic())
        with self._lock:
            self._roots[trace_id] = root
            self._written[trace_id] = False
            while len(self._roots) > self._max_roots:
                forgotten, _ = self._roots.popitem(last=False)
                self._written.pop(forgotten, None)

    def before_batch(self, spans: Sequence[ReadableSpan]) -> List[OpenRoot]:
        """Roots to write provisionally ahead of ``spans``: open ones with a child here.

        Roots that ended in this batch are forgotten: their real copy is in it.
        """
        with self._lock:
            if not self._roots:
                return []
            traces = []
            for span in spans:
                attributes = span_attributes(span)
                trace_id = attributes.get(OPIK_TRACE_ID)
                if isinstance(trace_id, str) and trace_id in self._roots:
                    if span.parent is None and attributes.get(MINTED_TRACE) is True:
                        self._forget(trace_id)
                    else:
                        traces.append(trace_id)
            return self._take(t for t in traces if t in self._roots)

    def take_due(self, delay: float) -> List[OpenRoot]:
        """Roots open for ``delay`` seconds or more that have not been written yet.

        A root that has ended meanwhile is skipped: the real one is on its way to the
        exporter (it may wait in a batch queue for a while), its children with it or
        behind it.
        """
        now = time.monotonic()
        with self._lock:
            return self._take(
                t
                for t, root in self._roots.items()
                if now - root.started_at >= delay and getattr(root.span, "end_time", None) is None
            )

    def next_due_in(self, delay: float) -> Optional[float]:
        """Seconds until the next unwritten root is due (0 when one is), or ``None``."""
        now = time.monotonic()
        with self._lock:
            waits = [
                root.started_at + delay - now
                for t, root in self._roots.items()
                if not self._written[t] and getattr(root.span, "end_time", None) is None
            ]
        return max(0.0, min(waits)) if waits else None

    def take_all(self) -> List[OpenRoot]:
        """Every root still open, written or not; the registry is left empty."""
        with self._lock:
            roots = [root for trace_id, root in self._roots.items() if still_minted_root(root, trace_id)]
            self._roots.clear()
            self._written.clear()
        return roots

    def _take(self, trace_ids: Any) -> List[OpenRoot]:
        taken = []
        for trace_id in list(trace_ids):
            if self._written.get(trace_id) is False:
                if not still_minted_root(self._roots[trace_id], trace_id):
                    self._forget(trace_id)
                    continue
                self._written[trace_id] = True
                taken.append(self._roots[trace_id])
        return taken

    def _forget(self, trace_id: str) -> None:
        self._roots.pop(trace_id, None)
        self._written.pop(trace_id, None)
