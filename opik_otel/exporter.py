"""``OpikExporter``: ships OTel spans to Opik's OTLP/HTTP endpoint, configured like Opik.

The export path is a few stages, each in its own module; this one only wires them:

1. :mod:`~opik_otel.prepare` — private markers stripped, ids and values repaired,
   trace-level options on root spans, trace rows of the traces this process minted;
2. :mod:`~opik_otel.encoding` — spans as OTLP protobuf, written directly by
   :mod:`~opik_otel.otlp_wire` with the prepared changes applied as it writes
   (``OPIK_OTEL_ENCODER=otel`` uses OpenTelemetry's encoder instead), trace rows as REST JSON;
3. :mod:`~opik_otel.shrinking` — requests above ``max_request_bytes`` split (or, for a
   single span, truncated by :mod:`~opik_otel.sizing`);
4. :mod:`~opik_otel.queue` — every request is appended to a durable queue before
   ``export()`` returns (trace rows before the spans of the same batch);
5. :mod:`~opik_otel.sender` — one background thread drains the queue oldest first
   through :mod:`~opik_otel.transport` (one POST, one total deadline, no redirects),
   with retries, ``Retry-After``, splitting on 413 and quarantine of what Opik can
   never take.

Records hold no secret: :mod:`~opik_otel.routing` adds the API key and custom headers
at send time, as configured then. Re-sending is harmless: Opik upserts by id.
"""

import os
import time
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._logging import get_logger
from .batching import if_alive
from .config import OpikConfig, resolve_config
from .encoding import encode_span_batch, encode_trace_rows
from .errors import ConfigurationError
from .flushing import add_delivery_flush, flush_timeout_of_caller
from .http_values import redact_url
from .options import (
    integer,
    path_setting,
    positive_number,
    validated_endpoint,
    validated_headers,
    validated_metadata,
    validated_policy,
    validated_tags,
    validated_thread_id,
    validated_verify,
)
from .masking import Masker, MaskFunction, Scrub
from .otlp_wire import WireEncoder
from .payloads import SPANS, TRACES, Payload
from .prepare import BatchPreparer, PreparedBatch, TraceOptions
from .projects import group_by_project
from .root_writer import OpenRootWriter
from .queue import DeliveryQueue, open_queue
from .reporting import Reporter
from .retry import RetryPolicy
from .routing import Destinations
from .sender import Sender
from .shrinking import fit
from .transport import Transport

LOGGER = get_logger(__name__)

ENCODER_VARIABLE = "OPIK_OTEL_ENCODER"

DEFAULT_TIMEOUT_SECONDS = 10.0
# Opik Cloud refuses bodies of a few tens of MB; staying well below keeps one request's
# retry cheap too.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
# The sender retries for ever; max_backoff bounds how late a recovered Opik is noticed
# when nobody flushes (a flush retries at once).
DEFAULT_RETRY_POLICY = RetryPolicy(max_attempts=1_000_000, initial_backoff=0.25, max_backoff=5.0)


class OpikExporter(SpanExporter):
    """Export spans to Opik over OTLP/HTTP, and create the trace rows this process owns.

    Configuration follows the Opik SDK: explicit arguments, then ``OPIK_*`` environment
    variables, then ``~/.opik.config``; invalid settings raise
    :class:`~opik_otel.config.ConfigurationError` here, never later in export.

    ``export()`` stores each batch in a durable queue and returns; one background
    thread delivers the queue in order (at least once). :meth:`force_flush` waits for
    delivery; :meth:`shutdown` delivers what Opik takes within its timeout and leaves
    the rest on disk for the next run.

    Args:
        url: Opik API base, e.g. ``http://localhost:5173/api``.
        api_key: Opik API key (sent raw in ``Authorization``; never logged or stored).
        workspace: Opik workspace.
        project_name: project every span of this exporter goes to.
        tags: tags added to every trace this exporter roots.
        metadata: metadata added to every trace this exporter roots.
        thread_id: thread (conversation) id of every trace this exporter roots.
        timeout: total seconds per HTTP request (connect, send and the whole answer).
        headers: extra HTTP headers on span requests; names must be HTTP tokens and
            values printable Latin-1 without CR/LF, or ``ConfigurationError`` is raised.
            Never stored: added at send time.
        compression: ``"gzip"`` (default) or ``None``.
        otlp_endpoint: send spans to this OTLP/HTTP traces URL (e.g. an OpenTelemetry
            Collector's ``http://collector:4318/v1/traces``) instead of Opik; trace rows
            still go to Opik's REST API.
        config_path: Opik config file to read instead of ``~/.opik.config``.
        max_request_bytes: requests above this (uncompressed) are split in halves; a
            single span or trace row above it has its largest values truncated.
        spool_directory: where the queue keeps requests until Opik accepts them
            (default: a private per-user directory, see :func:`opik_otel.queue.open_queue`);
            ``False`` keeps them in memory only (lost if the process ends first).
        spool_max_bytes: size cap of the queue; when reached the oldest data goes
            first, and the loss is counted (:attr:`stats`) and logged.
        verify: TLS verification: ``True`` (default), ``False``, or the path of a CA
            bundle file (or a directory of hashed certificates) to trust.
        retry_policy: backoff of the sender between failed attempts (default 0.25 s
            doubling, at most 5 s; it never gives up). A flush retries at once.
        mask: ``(key, value) -> value`` applied, on the export thread, to every
            attribute value of spans, events and links except Opik's own keys
            (``opik.*``, ``gen_ai.usage.*``, thread keys); a mask that raises withholds
            that value (one warning). The Opik SDK's registered anonymizers
            (``opik.hooks.add_anonymizer``) apply to span input/output attributes too.
        scrub: replace the values of keys naming a credential (authorization,
            cookie, password, secret, api key, access/refresh token, ...) with a
            marker: ``True`` (default), ``False``, or a list of extra key patterns
            (regular expressions, matched in the lower-cased key).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        workspace: Optional[str] = None,
        project_name: Optional[str] = None,
        *,
        tags: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        thread_id: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        headers: Optional[Mapping[str, str]] = None,
        compression: Optional[str] = "gzip",
        otlp_endpoint: Optional[str] = None,
        config_path: Optional[str] = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        spool_directory: Union[str, "os.PathLike[str]", None, bool] = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        verify: Union[bool, str, "os.PathLike[str]"] = True,
        retry_policy: Optional[RetryPolicy] = None,
        mask: Optional[MaskFunction] = None,
        scrub: Scrub = True,
    ) -> None:
        if config_path is not None and not isinstance(config_path, str):
            config_path = path_setting("config_path", config_path)
        self._config: OpikConfig = resolve_config(url, api_key, workspace, project_name, config_path=config_path)
        if compression not in ("gzip", None):
            raise ConfigurationError(f"compression must be 'gzip' or None, not {compression!r}.")
        self._options = TraceOptions(
            project_name=self._config.project_name,
            tags=validated_tags(tags),
            metadata=validated_metadata(metadata),
            thread_id=validated_thread_id(thread_id),
        )
        # Asked per batch whether it is active: Opik SDK anonymizers may be added later.
        self._masker = Masker(mask, scrub)
        # OPIK_OTEL_ENCODER=otel: OpenTelemetry's own encoder, to rule ours out in a bug report.
        use_otel_encoder = os.environ.get(ENCODER_VARIABLE, "").strip().lower() == "otel"
        self._encoder: Optional[WireEncoder] = None if use_otel_encoder else WireEncoder()
        self._timeout = positive_number("timeout", timeout)
        self._max_request_bytes = integer("max_request_bytes", max_request_bytes, minimum=1024)
        self._spool_max_bytes = integer("spool_max_bytes", spool_max_bytes, minimum=1)
        self._verify = validated_verify(verify)
        self._policy = validated_policy("retry_policy", retry_policy, DEFAULT_RETRY_POLICY)
        self._destinations = Destinations(
            self._config,
            validated_endpoint(otlp_endpoint) if otlp_endpoint is not None else self._config.otlp_traces_endpoint,
            via_collector=otlp_endpoint is not None,
            extra_headers=validated_headers(headers),
            gzip_spans=compression == "gzip",
        )
        if spool_directory is not None and not isinstance(spool_directory, bool):
            spool_directory = path_setting("spool_directory", spool_directory)
        # With OPIK_TRACK_DISABLE nothing is stored or sent, not even what earlier runs left.
        self._disabled = self._config.track_disable
        self._spool_setting = False if self._disabled else spool_directory
        self._stopped = False
        self._flush_hooked = False
        self._start_process_state()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=if_alive(weakref.ref(self), OpikExporter._start_process_state))
        if not self._disabled and (self._queue.claim_abandoned() or len(self._queue)):
            self._sender.notify()

    def _start_process_state(self) -> None:
        """The queue, HTTP client and sender thread of this process; a forked child
        gets its own (the parent's records stay the parent's to send)."""
        self._report = Reporter(self._destinations.via_collector)
        self._queue: DeliveryQueue = open_queue(
            self._spool_setting, destination_key=self._destinations.queue_key(), max_bytes=self._spool_max_bytes
        )
        self._transport = Transport(self._verify)
        self._losses_seen = 0
        # The parent's open roots are not the child's.
        self._roots = OpenRootWriter(BatchPreparer(self._options, self._masker).prepare, self._enqueue_batch)
        self._sender = Sender(
            self._queue,
            self._transport,
            self._destinations.route,
            policy=self._policy,
            timeout=self._timeout,
            reporter=self._report,
            max_request_bytes=self._max_request_bytes,
        )

    def __repr__(self) -> str:
        return (
            f"OpikExporter(url={redact_url(self._config.url)!r}, workspace={self._config.workspace!r}, "
            f"project_name={self._config.project_name!r}, endpoint={redact_url(self._destinations.span_endpoint)!r})"
        )

    @property
    def config(self) -> OpikConfig:
        """The resolved Opik settings (the API key is hidden from its repr)."""
        return self._config

    @property
    def queue(self) -> DeliveryQueue:
        """The delivery queue (on disk, or in memory with ``spool_directory=False``)."""
        return self._queue

    @property
    def stats(self) -> Dict[str, int]:
        """Counters of this process (a forked child starts from zero).

        ``requests_sent`` (answered 2xx), ``requests_retried``, ``requests_split``,
        ``requests_refused`` (refused for good), ``requests_quarantined`` (set aside),
        ``requests_lost`` (could not be queued), ``spans_truncated``,
        ``trace_rows_truncated``, ``spans_unencodable``, and the queue's
        ``queue_records``, ``queue_items``, ``queue_bytes``, ``queue_dropped_records``,
        ``queue_dropped_bytes``.
        """
        result = self._report.counts()
        for key, value in self._queue.stats().items():
            result[f"queue_{key}"] = value
        return result

    # --- SpanExporter -------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Queue a batch durably for delivery; ``SUCCESS`` once it is stored.

        Never raises, never sends on the caller's thread. Called from a flush of the
        SDK's ``BatchSpanProcessor`` (``provider.force_flush()``), it also waits (within
        that flush's timeout) until everything queued so far was delivered, and answers
        ``FAILURE`` if it was not.
        """
        if self._stopped:
            return SpanExportResult.FAILURE
        if self._disabled:
            return SpanExportResult.SUCCESS
        try:
            # Open roots of this batch's children go ahead of them (see open_roots).
            stored = self._roots.write_batch(spans)
        except Exception:
            LOGGER.error("Unexpected error while queueing spans for Opik.", exc_info=True)
            return SpanExportResult.FAILURE
        if not self._flush_hooked:
            # The SDK's BatchSpanProcessor returns True from force_flush whatever the
            # exporter did: a processor after it makes the provider's flush wait.
            self._flush_hooked = True
            add_delivery_flush()
        flush_millis = flush_timeout_of_caller()
        if flush_millis is not None:
            stored = self.force_flush(int(flush_millis)) and stored
        return SpanExportResult.SUCCESS if stored else SpanExportResult.FAILURE

    def root_started(self, span: ReadableSpan) -> None:
        """Called by ``OpikSpanProcessor(exporter=...)`` when a minted root starts.

        Returns at once (it runs on the application's thread); the trace row and the
        root span are queued provisionally off that thread, before the first child of
        the trace or once the root has been open for a second. Never raises.
        """
        try:
            if not (self._stopped or self._disabled):
                self._roots.root_started(span)
        except Exception:
            LOGGER.warning("Could not take note of an open Opik root span.", exc_info=True)

    def _enqueue_batch(self, batch: PreparedBatch) -> bool:
        stored = self.enqueue_trace_rows(batch.rows) if batch.rows else True
        # One OTLP request goes to exactly one project (its projectName header).
        entries = list(zip(batch.projects, batch.spans, batch.changes))
        for project, group in group_by_project(entries, self._config.project_name, lambda item: item[0]).items():
            spans = [span for _, span, _ in group]
            stored = self._enqueue_spans(spans, [changes for _, _, changes in group], project) and stored
        return stored

    def enqueue_trace_rows(self, rows: List[Dict[str, Any]]) -> bool:
        """Queue REST trace rows (``TraceWrite`` objects) in order with the spans; ``True``
        once stored. For rows written before their spans end (e.g. when a root starts)."""
        if not rows:
            return True
        return self._enqueue(Payload(TRACES, body=encode_trace_rows(rows)), len(rows))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until everything queued so far (also what dead processes left in the
        queue's directory) was accepted by Opik; ``False`` at the timeout otherwise
        (the data stays queued)."""
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        try:
            self._queue.claim_abandoned()
            delivered = self._sender.flush(deadline)
            # Data dropped or set aside since the last flush (queue cap, unstorable,
            # quarantined) was emitted before this one and never reached Opik.
            counts = self._report.counts()
            losses = self._queue.stats()["dropped_records"] + counts["requests_lost"] + counts["requests_quarantined"]
            lost, self._losses_seen = losses > self._losses_seen, losses
            return delivered and not lost
        except Exception:
            LOGGER.warning("Flushing spans to Opik failed.", exc_info=True)
            return False

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Deliver what Opik takes within ``timeout_millis``, then stop; what is left
        stays on disk for the next run (one line says how much and where)."""
        if self._stopped:
            return
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        try:
            self._roots.close(deadline)
        except Exception:
            LOGGER.warning("Could not close the Opik traces still open at shutdown.", exc_info=True)
        self._stopped = True
        try:
            self._sender.close(deadline)
            waiting, where = self._queue.pending_items, self._queue.directory
            if waiting:
                if where is not None:
                    LOGGER.warning("%d spans or trace rows not delivered yet wait for the next run in %s", waiting, where)
                else:
                    LOGGER.warning("%d spans or trace rows could not be delivered and are lost (no spool)", waiting)
            self._queue.close()
            self._transport.close()
        except Exception:
            LOGGER.warning("Shutting down the Opik exporter failed.", exc_info=True)

    # --- stages -------------------------------------------------------------------

    def _enqueue_spans(
        self, spans: List[ReadableSpan], changes: List[Dict[str, Any]], project: Optional[str] = None
    ) -> bool:
        encoded = encode_span_batch(spans, changes, self._encoder)
        for name in encoded.unencodable:
            self._report.count("spans_unencodable")
            self._report.log_cause(
                ("unencodable",), "warning", "Span %r could not be encoded as OTLP and was left out of the batch.", name
            )
        if not encoded.items:
            return not encoded.unencodable
        return self._enqueue(Payload(SPANS, body=encoded.body), encoded.items, project)

    def _enqueue(self, payload: Payload, items: int, project: Optional[str] = None) -> bool:
        fitted = fit(payload, self._max_request_bytes)
        if fitted.splits:
            self._report.count("requests_split", fitted.splits)
        for _ in range(fitted.truncated):
            self._report.truncated(payload.kind, self._max_request_bytes)
        stored = True
        for piece in fitted.pieces:
            count = items if len(fitted.pieces) == 1 else piece.item_count()
            if not self._queue.append(self._destinations.record(payload.kind, piece.body, count, project)):
                self._report.count("requests_lost")
                stored = False
        self._sender.notify()
        return stored
