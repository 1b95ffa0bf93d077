"""``OpikBatchSpanProcessor``: batches finished spans for an exporter, off the app's threads.

Written for opik_otel instead of the SDK's ``BatchSpanProcessor`` (1.45), which logs
"Queue full, dropping span" for every dropped span and whose ``force_flush`` ignores its
timeout (it exports on the caller's thread until done). Here:

- ``on_end`` only appends to a bounded queue: O(1), no lock, no I/O, no syscall;
- a full queue drops the new span, counts it (:attr:`OpikBatchSpanProcessor.dropped_spans`)
  and says so through the package's logger at most once a minute, with the total;
- one daemon thread exports, in batches of ``max_export_batch_size``, every
  ``schedule_delay_millis`` or as soon as a batch is full;
- ``force_flush(timeout_millis)`` and ``shutdown(timeout_millis)`` return by their
  timeout whatever the network does;
- after ``fork`` the child starts with an empty queue and no thread; its own thread
  starts with its first span (the parent's queued spans stay the parent's to send), and
  in a ``multiprocessing`` child its spans are flushed when the process ends;
- at interpreter exit the queue is flushed within ``exit_timeout_millis`` and nothing
  waits longer, since the thread is a daemon.
"""

import atexit
import collections
import inspect
import math
import os
import sys
import threading
import time
import weakref
from typing import Any, Callable, Deque, Dict, List, Optional

from opentelemetry.context import Context, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from ._logging import get_logger
from .errors import ConfigurationError

LOGGER = get_logger(__name__)

DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_SCHEDULE_DELAY_MILLIS = 1000.0
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_EXIT_TIMEOUT_MILLIS = 5000.0
_DROP_WARNING_INTERVAL_SECONDS = 60.0


class _FlushRequest:
    """A marker in the queue: set once every span queued before it was exported."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class OpikBatchSpanProcessor(SpanProcessor):
    """Queue finished spans and export them in batches on a background thread.

    Args:
        span_exporter: where batches go (normally :class:`~opik_otel.OpikExporter`).
        max_queue_size: spans held in memory at most; beyond it new spans are dropped,
            counted and reported.
        schedule_delay_millis: longest wait before a non-full batch is exported.
        max_export_batch_size: spans per ``export()`` call (at most ``max_queue_size``).
        exit_timeout_millis: how long the flush at interpreter exit (or at the end of a
            ``multiprocessing`` child) may take; the process never waits longer.

    Raises:
        ConfigurationError: a setting is not a positive number, or the batch is larger
            than the queue.
    """

    def __init__(
        self,
        span_exporter: SpanExporter,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        schedule_delay_millis: float = DEFAULT_SCHEDULE_DELAY_MILLIS,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
        *,
        exit_timeout_millis: float = DEFAULT_EXIT_TIMEOUT_MILLIS,
    ) -> None:
        validate_batching_options(max_queue_size, schedule_delay_millis, max_export_batch_size, exit_timeout_millis)
        self._exporter = span_exporter
        self._max_queue_size = max_queue_size
        self._schedule_delay = schedule_delay_millis / 1000
        self._max_export_batch_size = max_export_batch_size
        self._exit_timeout_millis = exit_timeout_millis
        self._shutdown = False
        self._deadline = math.inf  # export stops after it once shutdown began
        self._reset_process_state()
        reference = weakref.ref(self)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=if_alive(reference, OpikBatchSpanProcessor._reset_process_state))
        atexit.register(if_alive(reference, OpikBatchSpanProcessor._shutdown_at_exit))
        self._reference = reference

    def _reset_process_state(self) -> None:
        """Everything one process owns: after ``fork`` the child gets fresh ones."""
        self._pid = os.getpid()
        self._queue: Deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # starting the thread, counting drops; never held across I/O
        self._worker: Optional[threading.Thread] = None
        self._pending_flushes = 0
        self._dropped = 0
        self._dropped_at_shutdown = 0
        self._exported = 0
        self._next_drop_warning = 0.0

    # --- SpanProcessor ------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished span: constant time, never blocks, never raises."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._shutdown:
            self._count_drop(at_shutdown=True)
            return
        queue = self._queue
        if len(queue) >= self._max_queue_size:
            self._count_drop()
            return
        queue.append(span)
        if self._worker is None:
            self._start_worker()
        if len(queue) >= self._max_export_batch_size and not self._wake.is_set():
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Hand every span queued so far to the exporter and wait for the exporter's own
        flush (for ``OpikExporter``: delivery to Opik); ``False`` if not done within the
        timeout."""
        if self._shutdown:
            return False
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        request = _FlushRequest()
        with self._lock:
            # Counted before it is queued: the worker checks the count after popping.
            self._pending_flushes += 1
        self._queue.append(request)
        self._start_worker()
        self._wake.set()
        if not request.done.wait(max(0.0, deadline - time.monotonic())):
            return False
        try:
            return self._exporter.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000)) is not False
        except Exception:
            LOGGER.warning("Flushing the span exporter failed.", exc_info=True)
            return False

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Export what is queued, then shut the exporter down; returns within the timeout.

        Spans still queued when the time is up are not exported (counted in
        :attr:`dropped_spans` and logged).
        """
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        timeout = max(0.0, timeout_millis / 1000)
        deadline = time.monotonic() + timeout
        self._deadline = deadline
        if self._queue:
            self._start_worker()
        worker = self._worker
        self._wake.set()
        if worker is not None and worker is not threading.current_thread():
            worker.join(max(0.0, deadline - time.monotonic()))
        left = sum(1 for item in list(self._queue) if type(item) is not _FlushRequest)
        if left or (worker is not None and worker.is_alive()):
            with self._lock:
                self._dropped_at_shutdown += left
            LOGGER.warning(
                "Shutting down span export took longer than %.1f s; %d queued spans were not exported.",
                timeout,
                left,
            )
        remaining_millis = max(0.0, (deadline - time.monotonic()) * 1000)
        try:
            if _accepts_timeout(self._exporter.shutdown):
                self._exporter.shutdown(timeout_millis=remaining_millis)  # type: ignore[call-arg]
            else:
                self._exporter.shutdown()
        except Exception:
            LOGGER.warning("Shutting down the span exporter failed.", exc_info=True)

    # --- introspection ------------------------------------------------------------

    @property
    def span_exporter(self) -> SpanExporter:
        return self._exporter

    @property
    def is_shut_down(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._shutdown

    @property
    def max_queue_size(self) -> int:
        return self._max_queue_size

    @property
    def queue_size(self) -> int:
        """Spans waiting in this process's queue now."""
        return sum(1 for item in list(self._queue) if type(item) is not _FlushRequest)

    @property
    def dropped_spans(self) -> int:
        """Spans this process dropped: queue full, ended after shutdown, or still queued
        when the shutdown timeout ran out."""
        return self._dropped + self._dropped_at_shutdown

    @property
    def stats(self) -> Dict[str, int]:
        """``queued``, ``exported`` (handed to the exporter), ``dropped_queue_full`` and
        ``dropped_at_shutdown``, for this process."""
        return {
            "queued": self.queue_size,
            "exported": self._exported,
            "dropped_queue_full": self._dropped,
            "dropped_at_shutdown": self._dropped_at_shutdown,
        }

    # --- internals ----------------------------------------------------------------

    def _count_drop(self, at_shutdown: bool = False) -> None:
        with self._lock:
            if at_shutdown:
                self._dropped_at_shutdown += 1
                return
            self._dropped += 1
            total = self._dropped
            now = time.monotonic()
            if now < self._next_drop_warning:
                return
            self._next_drop_warning = now + _DROP_WARNING_INTERVAL_SECONDS
        # One line a minute at most, whatever the drop rate, with the running total.
        LOGGER.warning(
            "The span queue is full (max_queue_size=%d): new spans are dropped; %d dropped so far in "
            "this process. Raise max_queue_size, or check why the exporter is slow.",
            self._max_queue_size,
            total,
        )

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is not None:
                return
            worker = threading.Thread(target=self._run, name="OpikBatchSpanProcessor", daemon=True)
            self._worker = worker
            in_child = _in_multiprocessing_child()
        worker.start()
        if in_child:
            _register_multiprocessing_finalizer(self._reference)

    def _run(self) -> None:
        token = attach(suppressed_context())
        try:
            queue, wake = self._queue, self._wake
            while True:
                woken = True
                if not self._shutdown and len(queue) < self._max_export_batch_size:
                    woken = wake.wait(self._schedule_delay)
                wake.clear()
                # Woken because a batch is full: export full batches only and leave the rest
                # for the next round (fewer, fuller export calls). A flush, the shutdown
                # and the schedule delay export everything.
                self._drain(queue, full_only=woken and not self._shutdown)
                if self._shutdown and (not queue or time.monotonic() >= self._deadline):
                    return
        except Exception:
            LOGGER.error("The Opik span export thread failed.", exc_info=True)
            with self._lock:
                self._worker = None
        finally:
            detach(token)

    def _drain(self, queue: Deque[Any], full_only: bool = False) -> None:
        """Export what is queued, in batches; only this thread pops."""
        popleft = queue.popleft
        size = self._max_export_batch_size
        # Only what is queued now: spans that end meanwhile wait for the next round
        # rather than trickling out in tiny batches.
        queued = len(queue)
        while True:
            if queued == 0 or (full_only and queued < size and not self._pending_flushes):
                return
            count = min(queued, size)
            queued -= count
            # Bulk pop: the worker's per-span time is GIL time the app threads wait for.
            batch = [popleft() for _ in range(count)]
            if self._pending_flushes:
                self._export_around_flushes(batch)
            else:
                self._export(batch)
            if self._shutdown and time.monotonic() >= self._deadline:
                return

    def _export_around_flushes(self, items: List[Any]) -> None:
        batch: List[ReadableSpan] = []
        for item in items:
            if type(item) is _FlushRequest:
                if batch:
                    self._export(batch)
                    batch = []
                with self._lock:
                    self._pending_flushes -= 1
                item.done.set()
            else:
                batch.append(item)
        if batch:
            self._export(batch)

    def _export(self, batch: List[ReadableSpan]) -> None:
        try:
            self._exporter.export(batch)
        except Exception:
            LOGGER.error("Exporting a batch of %d spans failed.", len(batch), exc_info=True)
        self._exported += len(batch)

    def _shutdown_at_exit(self) -> None:
        if not self._shutdown:
            self.shutdown(self._exit_timeout_millis)


def validate_batching_options(
    max_queue_size: Any,
    schedule_delay_millis: Any,
    max_export_batch_size: Any,
    exit_timeout_millis: Any = DEFAULT_EXIT_TIMEOUT_MILLIS,
) -> None:
    """Raise :class:`ConfigurationError` unless the batching settings can work."""
    for name, value in (("max_queue_size", max_queue_size), ("max_export_batch_size", max_export_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be a positive integer, not {value!r}.")
    for name, value in (("schedule_delay_millis", schedule_delay_millis), ("exit_timeout_millis", exit_timeout_millis)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigurationError(f"{name} must be a non-negative number of milliseconds, not {value!r}.")
    if schedule_delay_millis <= 0:
        raise ConfigurationError("schedule_delay_millis must be positive.")
    if max_export_batch_size > max_queue_size:
        raise ConfigurationError(
            f"max_export_batch_size ({max_export_batch_size}) must not exceed max_queue_size ({max_queue_size})."
        )


def _accepts_timeout(method: Callable[..., Any]) -> bool:
    try:
        return "timeout_millis" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def suppressed_context() -> Context:
    """Instrumented HTTP clients used by the exporter must not trace their own requests."""
    from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY

    return set_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))


def if_alive(reference: "weakref.ref[Any]", method: Callable[[Any], None]) -> Callable[[], None]:
    """A fork or exit hook calling ``method(obj)`` while ``reference`` still has it."""

    def call() -> None:
        target = reference()
        if target is not None:
            try:
                method(target)
            except Exception:  # hooks at fork and exit must never raise
                LOGGER.warning("An opik_otel %s hook failed.", type(target).__name__, exc_info=True)

    return call


def _in_multiprocessing_child() -> bool:
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:
        return False
    try:
        return multiprocessing.parent_process() is not None
    except Exception:
        return False


def _register_multiprocessing_finalizer(reference: "weakref.ref[OpikBatchSpanProcessor]") -> None:
    """A ``multiprocessing`` child ends with ``os._exit`` after running its finalizers,
    not the ``atexit`` hooks: flush the child's spans from a finalizer."""
    try:
        from multiprocessing import util

        util.Finalize(None, if_alive(reference, OpikBatchSpanProcessor._shutdown_at_exit), exitpriority=10)
    except Exception:
        LOGGER.debug("Could not register the span flush for this multiprocessing child.", exc_info=True)
