"""``OpenRootWriter``: queues a minted trace's row and root span before its children.

The exporter hands it every batch (:meth:`OpenRootWriter.write_batch`) and every
minted root as it starts (:meth:`OpenRootWriter.root_started`, from
``OpikSpanProcessor``). It writes the provisional copy of an open root (see
:mod:`opik_otel.open_roots`) ahead of the first batch holding one of its children, or
from its own thread once the root has been open for a while, and closes the roots still
open at shutdown. One lock orders all of it, so a trace row is always queued ahead of
the children of its trace.
"""

import math
import threading
import time
from typing import Callable, Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan

from ._logging import get_logger
from .batching import suppressed_context
from .open_roots import OPEN_ROOT_DELAY_SECONDS, OpenRoot, OpenRoots, provisional_root, stopped_status
from .prepare import PreparedBatch

LOGGER = get_logger(__name__)


class OpenRootWriter:
    """Orders open roots' provisional copies with the batches of one exporter.

    Args:
        prepare: turns finished spans into a prepared batch (the exporter's first stage).
        enqueue: queues a prepared batch for delivery; ``True`` once stored.
    """

    def __init__(
        self,
        prepare: Callable[[Sequence[ReadableSpan]], PreparedBatch],
        enqueue: Callable[[PreparedBatch], bool],
    ) -> None:
        self._prepare = prepare
        self._enqueue = enqueue
        self._ordering_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._open_roots = OpenRoots()
        self._wakeup = threading.Event()
        # When the thread will look at the roots next (monotonic; inf: only when woken).
        # A root starting later is due later than those it waits for, so most starts
        # need not wake it: one wake-up per root would cost the application's thread
        # a GIL hand-over and the thread a pass over every open root.
        self._next_look = math.inf
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def root_started(self, span: ReadableSpan) -> None:
        """Take note of a minted root that has just started (the app's thread)."""
        if self._stopped:
            return
        self._open_roots.add(span)
        if self._thread is None:
            self._start_thread()
        if self._next_look > time.monotonic() + OPEN_ROOT_DELAY_SECONDS:
            self._wakeup.set()

    def write_batch(self, spans: Sequence[ReadableSpan]) -> bool:
        """Queue a batch, preceded by the open roots of its children."""
        with self._ordering_lock:
            early = self._open_roots.before_batch(spans)
            batch = self._prepare(spans)
            if early:
                first = self._provisional(early)
                batch = PreparedBatch(
                    first.spans + batch.spans,
                    first.changes + batch.changes,
                    first.rows + batch.rows,
                    first.projects + batch.projects,
                )
            return self._enqueue(batch)

    def close(self, deadline: float) -> None:
        """Queue the roots still open as ended now, with an error; stop the thread.

        A batch being queued holds the ordering lock; this waits for it no longer
        than ``deadline`` (the open roots then stay as last written).
        """
        try:
            if len(self._open_roots) and self._ordering_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    roots = self._open_roots.take_all()
                    if roots:
                        self._enqueue(self._provisional(roots, closing=True))
                finally:
                    self._ordering_lock.release()
        finally:
            self._stopped = True
            self._wakeup.set()

    def _provisional(self, roots: Sequence[OpenRoot], *, closing: bool = False) -> PreparedBatch:
        """Provisional copies of open roots; closed now, with an error, when ``closing``."""
        if closing:
            end = time.time_ns()
            # A root that did end, but never reached the exporter (a full queue dropped
            # it), is written as it ended.
            copies = [
                root.span if root.span.end_time is not None
                else provisional_root(root, end_time=end, status=stopped_status())
                for root in roots
            ]
        else:
            copies = [provisional_root(root) for root in roots]
        batch = self._prepare(copies)
        if not closing:
            for row in batch.rows:
                row.pop("end_time", None)  # still running
        return batch

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None and not self._stopped:
                thread = threading.Thread(target=self._run, name="OpikExporterOpenRoots", daemon=True)
                self._thread = thread
                thread.start()

    def _run(self) -> None:
        """Queue the roots open for a while, whether or not a child has been exported."""
        from opentelemetry.context import attach, detach

        token = attach(suppressed_context())
        try:
            while not self._stopped:
                # Any root starting from here on wakes the thread, until it knows when
                # to look next (then only a root due before that does).
                self._next_look = math.inf
                self._wakeup.clear()
                wait = self._open_roots.next_due_in(OPEN_ROOT_DELAY_SECONDS)
                if wait is None or wait > 0:
                    if wait is not None:
                        self._next_look = time.monotonic() + wait
                    self._wakeup.wait(wait)
                    continue
                with self._ordering_lock:
                    due = self._open_roots.take_due(OPEN_ROOT_DELAY_SECONDS)
                    if due and not self._stopped:
                        self._enqueue(self._provisional(due))
        except Exception:
            LOGGER.error("Writing open Opik root spans stopped unexpectedly.", exc_info=True)
        finally:
            detach(token)
