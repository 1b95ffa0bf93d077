"""``OpikExporter``: ships OTel spans to Opik's OTLP/HTTP endpoint, configured like Opik.

Spans are encoded with the standard OTLP protobuf encoder and sent gzip-compressed with
Opik's routing headers. Trace rows for traces this process minted go to Opik's REST API.
Both kinds of request get the same treatment:

- **retries**: connection errors, timeouts, 408, 429, 500, 502, 503 and 504 are retried
  with exponential backoff and jitter, honouring ``Retry-After``; any other refusal is
  not retried and is logged once per distinct cause with what to do about it;
- **size**: a request above ``max_request_bytes``, or answered 413, is split in halves
  recursively; a single span (or trace row) still too large has its largest values
  truncated with a marker, keeping its ids, linkage and name; it is never dropped;
- **outages**: what still fails after the (short) retries on the export thread goes to a
  bounded on-disk spool, replayed oldest first by a background thread once Opik answers,
  also when it was left by an earlier run. Re-sending is harmless: ids are explicit, so
  Opik upserts.

Sending never happens on the application's threads: the exporter runs behind
:class:`~opik_otel.batching.OpikBatchSpanProcessor` (``configure()`` sets that up).
"""

import gzip
import hashlib
import math
import os
import re
import tempfile
import threading
import time
import weakref
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._logging import DEFAULT_INTERVAL_SECONDS, get_logger
from .attributes import DROPPED_SPAN, MINTED_TRACE, OPIK_TRACE_ID, PROJECT_NAME, SAMPLED_OUT, TRACE_ATTRIBUTES
from .batching import if_alive, suppressed_context
from .config import ConfigurationError, OpikConfig, _validate_header_value, resolve_config
from .linkage import span_attributes
from .masking import Masker, MaskFunction, Scrub
from .payloads import SPANS, TRACES, Payload, dump_json
from .retry import RetryPolicy, describe_failure, parse_retry_after, redact_url
from .spans import copy_span, id_fixes, invalid_usage_removals, needs_fix, sendable_span, value_fixes
from .spool import DiskSpool
from .trace_attributes import trace_options
from .trace_rows import (
    OPIK_METADATA,
    OPIK_TAGS,
    THREAD_ID_ATTRIBUTES,
    merge_metadata,
    merge_tags,
    trace_row_from_span,
    trace_rows_request_body,
)

LOGGER = get_logger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
# Opik Cloud refuses bodies of a few tens of MB; staying well below keeps one request's
# retry cheap too.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
# The first sends of a batch happen on the export thread; after these it goes to the
# spool, whose replayer keeps trying with the replay policy. Short, so that the export
# thread keeps draining the span queue during an outage.
DEFAULT_RETRY_POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.25, max_backoff=2.0)
# The replayer retries forever (max_attempts is not used); max_backoff bounds how late a
# recovered Opik is noticed.
DEFAULT_REPLAY_POLICY = RetryPolicy(max_attempts=1_000_000, initial_backoff=0.5, max_backoff=10.0)
# Kept for code that imported the old names.
EXPORT_RETRY_POLICY = DEFAULT_RETRY_POLICY
REPLAY_RETRY_POLICY = DEFAULT_REPLAY_POLICY
# At shutdown a send gets at most this long (and never past the shutdown deadline).
_CLOSING_TIMEOUT_SECONDS = 2.0

_KINDS = (SPANS, TRACES)
# RFC 9110 token characters: what an HTTP header name may consist of.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_SECRET_HEADER_MARKERS = ("authorization", "cookie", "key", "token", "secret", "password")
# Headers the exporter or the HTTP client manage; a user value would corrupt the framing.
_RESERVED_HEADERS = frozenset(
    {"content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "keep-alive",
     "te", "trailer", "upgrade", "expect"}
)
# Fields of a trace row whose string values may be cut to fit a request.

# Private attributes of this package: never exported (Opik would store them as input).
_PRIVATE_MARKERS = (MINTED_TRACE, DROPPED_SPAN, SAMPLED_OUT, TRACE_ATTRIBUTES, PROJECT_NAME)

_DELIVERED = "delivered"
_KEEP = "keep"
_TOO_LARGE = "too_large"
_REFUSED = "refused"


class _Outcome:
    """How one HTTP request ended."""

    __slots__ = ("status", "error", "retry_after")

    def __init__(self, status: Optional[int], error: Optional[BaseException] = None, retry_after: Optional[float] = None):
        self.status = status
        self.error = error
        self.retry_after = retry_after

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def retryable(self, policy: RetryPolicy) -> bool:
        return self.error is not None or (self.status is not None and policy.should_retry_status(self.status))

    @property
    def timed_out(self) -> bool:
        return isinstance(self.error, requests.exceptions.Timeout)


class OpikExporter(SpanExporter):
    """Export spans to Opik over OTLP/HTTP, and create the trace rows this process owns.

    Configuration follows the Opik SDK: explicit arguments, then ``OPIK_*`` environment
    variables, then ``~/.opik.config``; invalid settings raise
    :class:`~opik_otel.config.ConfigurationError` here, never later in export.

    Args:
        url: Opik API base, e.g. ``http://localhost:5173/api``.
        api_key: Opik API key (sent raw in ``Authorization``; never logged or spooled).
        workspace: Opik workspace.
        project_name: project every span of this exporter goes to.
        tags: tags added to every trace this exporter roots.
        metadata: metadata added to every trace this exporter roots.
        thread_id: thread (conversation) id of every trace this exporter roots.
        timeout: seconds per HTTP request.
        headers: extra HTTP headers on span requests; names must be HTTP tokens and
            values printable Latin-1 without CR/LF, or ``ConfigurationError`` is raised.
        compression: ``"gzip"`` (default) or ``None``.
        otlp_endpoint: send spans to this OTLP/HTTP traces URL (e.g. an OpenTelemetry
            Collector's ``http://collector:4318/v1/traces``) instead of Opik; trace rows
            still go to Opik's REST API.
        config_path: Opik config file to read instead of ``~/.opik.config``.
        max_request_bytes: requests above this (uncompressed) are split in halves; a
            single span or trace row above it has its largest values truncated.
        spool_directory: where undeliverable requests wait for Opik (default: a
            per-user, per-destination directory under the system temp dir); ``False``
            disables spooling (then what fails after the retries is lost, and logged).
        spool_max_bytes: size cap of the spool; when reached the oldest data goes
            first, and the loss is counted (:attr:`stats`) and logged.
        verify: TLS verification: ``True`` (default), ``False``, or the path of a CA
            bundle file (or a directory of hashed certificates) to trust.
        retry_policy: backoff for the retries on the export thread before a request
            is spooled (default: 3 attempts, 0.25 s doubling, at most 2 s). A
            ``Retry-After`` longer than its ``max_backoff`` sends the request to the
            spool at once; the replayer then waits as asked.
        replay_policy: backoff of the spool replayer between failed attempts
            (default: 0.5 s doubling, at most 10 s; it never gives up).
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
        replay_policy: Optional[RetryPolicy] = None,
        mask: Optional[MaskFunction] = None,
        scrub: Scrub = True,
    ) -> None:
        if config_path is not None and not isinstance(config_path, str):
            config_path = _path_setting("config_path", config_path)
        self._config: OpikConfig = resolve_config(url, api_key, workspace, project_name, config_path=config_path)
        if compression not in ("gzip", None):
            raise ConfigurationError(f"compression must be 'gzip' or None, not {compression!r}.")
        self._tags = _validated_tags(tags)
        self._metadata = _validated_metadata(metadata)
        self._thread_id = _validated_thread_id(thread_id)
        self._timeout = _positive_number("timeout", timeout)
        self._max_request_bytes = _integer("max_request_bytes", max_request_bytes, minimum=1024)
        spool_max_bytes = _integer("spool_max_bytes", spool_max_bytes, minimum=1)
        self._verify = _validated_verify(verify)
        self._retry_policy = _validated_policy("retry_policy", retry_policy, DEFAULT_RETRY_POLICY)
        self._replay_policy = _validated_policy("replay_policy", replay_policy, DEFAULT_REPLAY_POLICY)
        self._compression = compression
        self._masker = Masker(mask, scrub)
        extra_headers = _validated_headers(headers)

        self._span_endpoint = _validated_endpoint(otlp_endpoint) if otlp_endpoint is not None else self._config.otlp_traces_endpoint
        self._via_collector = otlp_endpoint is not None
        routing = self._config.headers()
        if otlp_endpoint is not None:
            # A Collector adds Opik's credentials itself; the key stays in this process.
            routing.pop("Authorization", None)
        self._span_headers = {**routing, **extra_headers, "Content-Type": "application/x-protobuf"}
        if compression == "gzip":
            self._span_headers["Content-Encoding"] = "gzip"
        self._rest_headers = {**self._config.headers(), "Content-Type": "application/json"}
        self._endpoints = {SPANS: self._span_endpoint, TRACES: self._config.traces_batch_endpoint}

        self._spool: Optional[DiskSpool] = None
        if spool_directory is not False:
            if spool_directory is None or spool_directory is True:
                directory = _default_spool_directory(self._endpoints, self._config)
            else:
                directory = _path_setting("spool_directory", spool_directory)
            self._spool = DiskSpool(directory, max_bytes=spool_max_bytes)

        self._closing_deadline = math.inf
        self._hold_until = 0.0  # monotonic time before which Opik asked not to be called
        self._reset_process_state()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=if_alive(weakref.ref(self), OpikExporter._reset_process_state))
        if self._spool is not None and self._spool.claim_abandoned():
            self._wake_replayer()

    def __repr__(self) -> str:
        return (
            f"OpikExporter(url={self._config.url!r}, workspace={self._config.workspace!r}, "
            f"project_name={self._config.project_name!r}, endpoint={redact_url(self._span_endpoint)!r})"
        )

    @property
    def config(self) -> OpikConfig:
        """The resolved Opik settings (the API key is hidden from its repr)."""
        return self._config

    @property
    def spool(self) -> Optional[DiskSpool]:
        """The on-disk spool, or ``None`` when spooling is disabled."""
        return self._spool

    @property
    def stats(self) -> Dict[str, int]:
        """Counters of this process (a forked child starts from zero).

        ``requests_sent`` (answered 2xx), ``requests_retried``, ``requests_spooled``,
        ``requests_replayed`` (spooled requests delivered later), ``requests_split``,
        ``requests_refused`` (answered with a status that is not retried; the data is
        dropped), ``requests_lost`` (could not be spooled), ``spans_truncated``,
        ``trace_rows_truncated``, ``spans_unencodable``, plus the spool's
        ``spool_records``, ``spool_bytes``, ``spool_dropped_records`` and
        ``spool_dropped_bytes`` (oldest records evicted at the size cap, or corrupt).
        """
        with self._stats_lock:
            result = dict(self._stats)
        for key in (
            "requests_sent",
            "requests_retried",
            "requests_spooled",
            "requests_replayed",
            "requests_split",
            "requests_refused",
            "requests_lost",
            "spans_truncated",
            "trace_rows_truncated",
            "spans_unencodable",
        ):
            result.setdefault(key, 0)
        spool = self._spool
        result["spool_records"] = len(spool) if spool is not None else 0
        result["spool_bytes"] = spool.size_bytes if spool is not None else 0
        result["spool_dropped_records"] = spool.dropped_records if spool is not None else 0
        result["spool_dropped_bytes"] = spool.dropped_bytes if spool is not None else 0
        return result

    # --- SpanExporter -------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send a batch; returns FAILURE only for data that was refused or lost.

        Never raises. Runs on the batching processor's thread, never on the app's.
        """
        if self._stopped.is_set():
            return SpanExportResult.FAILURE
        try:
            to_send, rows = self._prepare(spans)
            delivered = True
            if rows:
                # Rows first: Opik shows spans whose trace row is missing as orphans.
                delivered = self._send(Payload(TRACES, message=trace_rows_request_body(rows))) and delivered
            if to_send:
                payload = self._span_payload(to_send)
                if payload is not None:
                    delivered = self._send(payload) and delivered
            return SpanExportResult.SUCCESS if delivered else SpanExportResult.FAILURE
        except Exception:
            LOGGER.error("Unexpected error while exporting spans to Opik.", exc_info=True)
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the spool has been replayed, at most ``timeout_millis``.

        Returns ``True`` when nothing is left waiting for Opik. While Opik is down it
        returns ``False`` once the timeout has passed; the data stays spooled.
        """
        spool = self._spool
        if spool is None:
            return True
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        # Spool left by processes that are gone (an earlier run, a forked child that
        # exited) is replayed too.
        spool.claim_abandoned()
        poked = False
        while len(spool) > 0:
            if self._stopped.is_set():
                return False
            if not poked:
                # Skip the replayer's backoff once: someone is waiting for it.
                self._wake_replayer(poke=True)
                poked = True
            else:
                self._wake_replayer()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.02, remaining))
        return True

    def begin_shutdown(self, timeout_millis: float = 30000) -> None:
        """Stop retrying: from now on a failed send goes to the spool at once.

        Called by the batching processor at the start of its shutdown, so that the spans
        still queued reach Opik or the spool within the shutdown timeout. Sends made
        after this give up by the deadline.
        """
        # Network sends stop at 80% of the time, so the rest can go to the spool on disk.
        budget = max(0.0, timeout_millis / 1000) * 0.8
        self._closing_deadline = min(self._closing_deadline, time.monotonic() + budget)
        self._closing.set()
        self._wakeup.set()

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Stop the replayer (waiting at most ``timeout_millis``); spooled data stays on
        disk for the next run of the application."""
        if self._stopped.is_set():
            return
        self.begin_shutdown(timeout_millis)
        deadline = time.monotonic() + max(0.0, timeout_millis / 1000)
        self._stopped.set()
        self._wakeup.set()
        replayer = self._replayer
        if replayer is not None and replayer is not threading.current_thread():
            replayer.join(max(0.0, deadline - time.monotonic()))
            if replayer.is_alive():
                # It is in the middle of a request; it will stop after it, and the process
                # may exit meanwhile: the record stays spooled and is replayed next run.
                return
        for session in self._drain_sessions():
            try:
                session.close()
            except Exception:  # closing is best effort
                pass
        if self._spool is not None:
            self._spool.close()

    # --- preparing a batch --------------------------------------------------------

    def _prepare(self, spans: Sequence[ReadableSpan]) -> Tuple[List[ReadableSpan], List[Dict[str, Any]]]:
        """Leave out filtered and sampled-out spans, mask values, strip private markers,
        add trace-level options to root spans, make ids and values sendable, collect
        trace rows."""
        prepared: List[ReadableSpan] = []
        rows: List[Dict[str, Any]] = []
        masker = self._masker if self._masker.active else None
        for span in spans:
            attributes = span_attributes(span)
            if attributes.get(SAMPLED_OUT) is True:
                continue
            minted = attributes.get(MINTED_TRACE) is True
            dropped = attributes.get(DROPPED_SPAN) is True
            if dropped and not (minted and span.parent is None):
                continue  # filtered out; no row to write from it either
            if masker is not None:
                events, links = masker.events_and_links(span)
                if events is not None or links is not None:
                    span = copy_span(span, events=events, links=links)
            changes = invalid_usage_removals(attributes)
            for marker in _PRIVATE_MARKERS:
                if marker in attributes:
                    changes[marker] = None
            id_fixes(attributes, changes)
            is_root = span.parent is None
            options = trace_options(self._tags, self._metadata, self._thread_id, attributes) if is_root else None
            if options is not None and (minted or OPIK_TRACE_ID not in attributes):
                changes.update(self._root_options(attributes, *options))
            if masker is not None:
                masker.attribute_changes(attributes, changes)
            value_fixes(attributes, changes)
            project = attributes.get(PROJECT_NAME)
            span = sendable_span(span, changes)
            if minted and options is not None:
                row = self._trace_row(span, project if isinstance(project, str) else None, *options)
                if row is not None:
                    rows.append(row)
            if not dropped:
                prepared.append(span)
        return prepared, rows

    def _root_options(
        self, attributes: Mapping[str, Any], tags: List[str], metadata: Dict[str, Any], thread_id: Optional[str]
    ) -> Dict[str, Any]:
        """Trace-level options, written on a root span the way Opik reads them from it."""
        changes: Dict[str, Any] = {}
        if tags:
            changes[OPIK_TAGS] = merge_tags(tags, attributes.get(OPIK_TAGS))
        if metadata:
            # Only the opik.metadata blob: opik.metadata.<key> attributes stay as they are.
            blob = {OPIK_METADATA: attributes[OPIK_METADATA]} if OPIK_METADATA in attributes else {}
            changes[OPIK_METADATA] = dump_json(merge_metadata(metadata, blob))
        if thread_id and (thread_id != self._thread_id or not any(key in attributes for key in THREAD_ID_ATTRIBUTES)):
            # A trace_attributes() thread wins over the span's own; the configured one does not.
            changes[THREAD_ID_ATTRIBUTES[0]] = thread_id
        return changes

    def _trace_row(
        self,
        root: ReadableSpan,
        project_name: Optional[str],
        tags: List[str],
        metadata: Dict[str, Any],
        thread_id: Optional[str],
    ) -> Optional[Dict[str, Any]]:
        try:
            return trace_row_from_span(
                root,
                project_name=project_name or self._config.project_name,
                tags=tags,
                metadata=metadata,
                thread_id=thread_id,
            )
        except ValueError:
            LOGGER.warning("Could not build an Opik trace row from root span %r.", root.name, exc_info=True)
            return None

    def _span_payload(self, spans: List[ReadableSpan]) -> Optional["Payload"]:
        """Encode spans; a span the OTLP encoder cannot take is left out and logged."""
        try:
            return Payload(SPANS, message=encode_spans(spans))
        except Exception:
            pass
        merged = ExportTraceServiceRequest()
        for span in spans:
            try:
                merged.MergeFrom(encode_spans([span]))
            except Exception:
                self._count("spans_unencodable")
                self._log_cause(
                    ("unencodable",),
                    "warning",
                    "Span %r could not be encoded as OTLP and was left out of the batch.",
                    span.name,
                )
        return Payload(SPANS, message=merged) if len(merged.resource_spans) else None

    # --- delivering now -----------------------------------------------------------

    def _send(self, payload: "Payload") -> bool:
        """Deliver ``payload`` now, or spool it: True when delivered or kept."""
        body = payload.body
        if len(body) > self._max_request_bytes:
            halves = payload.split()
            if halves is not None:
                self._count("requests_split")
                first, second = halves
                return self._send(first) & self._send(second)
            smaller = payload.truncated(self._max_request_bytes)
            if smaller is not None:
                self._count_truncated(payload.kind)
                payload = smaller
        if self._spool is not None and (len(self._spool) > 0 or time.monotonic() < self._hold_until):
            # Replay order: older spooled data goes first. And while Opik asked to wait
            # (Retry-After), nobody knocks.
            return self._keep(payload)
        result, outcome = self._send_with_retries(payload)
        if result == _DELIVERED:
            return True
        if result == _KEEP:
            return self._keep(payload)
        if result == _TOO_LARGE:
            pieces = self._shrink(payload)
            if pieces is not None:
                return all([self._send(piece) for piece in pieces])
        self._refuse(payload, outcome)
        return False

    def _send_with_retries(self, payload: "Payload") -> Tuple[str, _Outcome]:
        policy = self._retry_policy
        attempt = 0
        while True:
            attempt += 1
            outcome = self._post(payload.kind, payload.body)
            if outcome.ok:
                return _DELIVERED, outcome
            if outcome.status == 413:
                return _TOO_LARGE, outcome
            if not outcome.retryable(policy):
                return _REFUSED, outcome
            if (
                self._closing.is_set()
                or outcome.timed_out  # a hung Opik must not hold the export thread
                or not policy.has_attempts_left(attempt)
                or (outcome.retry_after is not None and outcome.retry_after > policy.max_backoff)
            ):
                self._log_unreachable(payload.kind, outcome)
                return _KEEP, outcome
            self._count("requests_retried")
            if self._closing.wait(policy.delay(attempt, outcome.retry_after)):
                return _KEEP, outcome

    def _shrink(self, payload: "Payload") -> Optional[List["Payload"]]:
        """The smaller requests to send instead of one answered 413, or None."""
        halves = payload.split()
        if halves is not None:
            self._count("requests_split")
            return list(halves)
        smaller = payload.truncated(max(1024, len(payload.body) // 2))
        if smaller is None or len(smaller.body) >= len(payload.body):
            return None
        self._count_truncated(payload.kind)
        return [smaller]

    def _keep(self, payload: "Payload") -> bool:
        spool = self._spool
        if spool is None:
            self._count("requests_lost")
            self._log_cause(
                ("lost", payload.kind),
                "error",
                "Opik is unreachable and spooling is disabled (spool_directory=False): %s data was dropped.",
                "span" if payload.kind == SPANS else "trace-row",
            )
            return False
        stored = spool.append(payload.kind, payload.body, self._headers(payload.kind))
        if stored:
            self._count("requests_spooled")
        else:
            self._count("requests_lost")
        self._wake_replayer()
        return stored

    def _refuse(self, payload: "Payload", outcome: _Outcome) -> None:
        """A request Opik will never take: count it and say once what to do."""
        self._count("requests_refused")
        self._log_cause(
            ("refused", payload.kind, outcome.status, type(outcome.error).__name__ if outcome.error else None),
            "error" if outcome.status in (401, 403, 404, 405) else "warning",
            "%s",
            self._describe(payload.kind, outcome) + " The data of that request was dropped.",
        )

    def _describe(self, kind: str, outcome: _Outcome) -> str:
        url = self._endpoints[kind]
        if kind == SPANS and self._via_collector and outcome.status in (401, 403, 404, 405):
            if outcome.status in (401, 403):
                return (
                    f"The OTLP endpoint {redact_url(url)} rejected the request (HTTP {outcome.status}): "
                    "check the headers= given for it (the collector adds Opik's credentials)."
                )
            return (
                f"{redact_url(url)} is not an OTLP/HTTP traces endpoint (HTTP {outcome.status}): check "
                "otlp_endpoint; it must be the full URL, e.g. http://collector:4318/v1/traces."
            )
        return describe_failure(outcome.status, outcome.error, url)

    def _log_unreachable(self, kind: str, outcome: _Outcome) -> None:
        cause = ("retry", kind, outcome.status, type(outcome.error).__name__ if outcome.error else None)
        self._log_cause(cause, "warning", "%s", self._describe(kind, outcome))

    def _log_cause(self, cause: Tuple[Any, ...], level: str, message: str, *args: Any) -> None:
        """Log ``message`` at most once per interval for each distinct ``cause``.

        Exception texts vary from one failure to the next (addresses, ports), so the
        package filter, which compares whole messages, would let every one through.
        """
        now = time.monotonic()
        with self._stats_lock:
            last = self._logged_causes.get(cause)
            if last is not None and now - last < DEFAULT_INTERVAL_SECONDS:
                return
            if len(self._logged_causes) > 256:
                self._logged_causes.clear()
            self._logged_causes[cause] = now
        getattr(LOGGER, level)(message, *args)

    def _headers(self, kind: str) -> Dict[str, str]:
        return self._span_headers if kind == SPANS else self._rest_headers

    def _post(self, kind: str, body: bytes, headers: Optional[Mapping[str, str]] = None) -> _Outcome:
        if headers is None:
            headers = self._headers(kind)
        if kind == SPANS and self._compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        timeout = self._timeout
        if self._closing.is_set():
            remaining = self._closing_deadline - time.monotonic()
            if remaining <= 0.05:
                return _Outcome(None, error=requests.exceptions.Timeout("shutdown deadline reached"))
            timeout = min(timeout, _CLOSING_TIMEOUT_SECONDS, remaining)
        try:
            response = self._session().post(
                self._endpoints[kind], data=body, headers=headers, timeout=timeout, verify=self._verify
            )
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            outcome = _Outcome(response.status_code, retry_after=retry_after)
        except requests.RequestException as error:
            outcome = _Outcome(None, error=error)
        except Exception as error:  # e.g. an unreadable CA bundle: never escapes
            outcome = _Outcome(None, error=error)
        if outcome.ok:
            self._count("requests_sent")
        elif outcome.retry_after is not None:
            self._hold_until = max(self._hold_until, time.monotonic() + outcome.retry_after)
        return outcome

    def _session(self) -> requests.Session:
        """A session per thread: the export thread never waits for the replayer's I/O."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._stats_lock:
                self._sessions.append(session)
        return session

    def _drain_sessions(self) -> List[requests.Session]:
        with self._stats_lock:
            sessions, self._sessions = self._sessions, []
        return sessions

    def _count(self, key: str, amount: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += amount

    def _count_truncated(self, kind: str) -> None:
        self._count("spans_truncated" if kind == SPANS else "trace_rows_truncated")
        self._log_cause(
            ("truncated", kind),
            "warning",
            "A %s too large for one request to Opik (max_request_bytes=%d, or HTTP 413) had its largest "
            "values truncated; each cut value ends with a '[truncated N bytes by opik_otel]' marker.",
            "span" if kind == SPANS else "trace row",
            self._max_request_bytes,
        )

    # --- spool replay -------------------------------------------------------------

    def _reset_process_state(self) -> None:
        """(Re)create what a process cannot share with its parent after ``fork``.

        Locks and events are new (a parent thread may have held them at the fork), the
        HTTP sessions too (their pooled sockets belong to the parent); the spool gives
        the child its own directory by itself.
        """
        stopped = getattr(self, "_stopped", None)
        closing = getattr(self, "_closing", None)
        self._stopped = threading.Event()  # shutdown(): nothing more is sent
        self._closing = threading.Event()  # shutting down: no more retries, spool at once
        if stopped is not None and stopped.is_set():
            self._stopped.set()
        if closing is not None and closing.is_set():
            self._closing.set()
        self._local = threading.local()
        self._sessions: List[requests.Session] = []
        self._stats_lock = threading.Lock()
        self._stats: Counter = Counter()
        self._logged_causes: Dict[Tuple[Any, ...], float] = {}
        self._replayer_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._replayer: Optional[threading.Thread] = None

    def _wake_replayer(self, poke: bool = False) -> None:
        if poke:
            self._wakeup.set()
        if self._stopped.is_set() or self._spool is None:
            return
        with self._replayer_lock:
            if self._replayer is None:
                self._replayer = threading.Thread(target=self._replay, name="OpikExporterReplay", daemon=True)
                self._replayer.start()

    def _replay(self) -> None:
        from opentelemetry.context import attach, detach

        token = attach(suppressed_context())
        try:
            self._replay_loop()
        except Exception:
            LOGGER.error("The Opik spool replayer stopped unexpectedly.", exc_info=True)
            with self._replayer_lock:
                self._replayer = None
        finally:
            detach(token)

    def _replay_loop(self) -> None:
        spool = self._spool
        assert spool is not None
        failures = 0
        recovered_from_outage = False
        suspect = _PoisonTracker()
        while not self._stopped.is_set():
            entry = spool.peek_oldest()
            if entry is None:
                with self._replayer_lock:
                    if len(spool) == 0:
                        self._replayer = None
                        if recovered_from_outage:
                            LOGGER.info("Opik answers again; the spool has been replayed.")
                        return
                continue
            hold = self._hold_until - time.monotonic()
            if hold > 0:
                self._stopped.wait(hold)  # Retry-After seen by any thread
                continue
            self._wakeup.clear()
            try:
                outcome = self._replay_entry(spool, entry)
            except Exception as error:  # keep replaying whatever happens
                LOGGER.warning("Replaying a spooled request to Opik failed unexpectedly.", exc_info=True)
                outcome = _Outcome(None, error=error)
            if outcome is None:
                failures = 0
                suspect.delivered(entry)
                continue
            failures += 1
            recovered_from_outage = True
            if failures == 1:
                self._log_unreachable(entry.kind if entry.kind in _KINDS else SPANS, outcome)
            if outcome.status == 500 and self._set_aside_poison(spool, entry, suspect):
                continue
            if outcome.retry_after is None:
                # A force_flush() or shutdown since the attempt started cuts the wait short.
                self._wakeup.wait(self._replay_policy.delay(failures))
            # else: the server chose the moment (_hold_until), waited for at the loop's top.

    def _set_aside_poison(self, spool: DiskSpool, entry: Any, suspect: "_PoisonTracker") -> bool:
        """Keep one request Opik cannot parse (it answers 500 to that one) from
        blocking the spool for ever.

        After repeated 500s the record goes to the back of the spool so the others get
        their turn; when it comes back still failing while others were delivered in
        between, Opik will never take it: it is dropped, counted and logged.
        """
        verdict = suspect.failed(entry, self._stats["requests_replayed"])
        if verdict == _PoisonTracker.WAIT:
            return False
        if verdict == _PoisonTracker.DROP:
            spool.remove(entry)
            self._count("requests_refused")
            self._log_cause(
                ("poison", entry.kind),
                "error",
                "Opik keeps answering HTTP 500 to one spooled %s request while accepting the others "
                "(it probably cannot parse it); that request was dropped.",
                "span" if entry.kind == SPANS else "trace-row",
            )
            return True
        if spool.append(entry.kind, entry.body, entry.headers):
            spool.remove(entry)
        return True

    def _replay_entry(self, spool: DiskSpool, entry: Any) -> Optional[_Outcome]:
        """Send one spooled request; None when it is done with (delivered or refused)."""
        if entry.kind not in _KINDS:
            LOGGER.warning("Dropped a spooled request of unknown kind %r.", entry.kind)
            spool.remove(entry)
            return None
        payload = Payload(entry.kind, body=entry.body)
        headers = self._replay_headers(entry.kind, entry.headers)
        leftovers: List[Payload] = []
        outcome = self._replay_payload(payload, headers, leftovers)
        if outcome is not None and leftovers == [payload]:
            return outcome  # nothing changed: the record stays at the head of the spool
        # Delivered, refused, or split with some pieces still to go: the pieces that are
        # left go back to the spool in place of the record.
        for piece in leftovers:
            if not spool.append(piece.kind, piece.body, headers):
                self._count("requests_lost")
        spool.remove(entry)
        return outcome

    def _replay_payload(self, payload: "Payload", headers: Mapping[str, str], leftovers: List["Payload"]) -> Optional[_Outcome]:
        outcome = self._post(payload.kind, payload.body, headers)
        if outcome.ok:
            self._count("requests_replayed")
            return None
        if outcome.status == 413:
            pieces = self._shrink(payload)
            if pieces is None:
                self._refuse(payload, outcome)
                return None
            failure: Optional[_Outcome] = None
            for piece in pieces:
                if failure is not None:
                    leftovers.append(piece)
                else:
                    failure = self._replay_payload(piece, headers, leftovers)
            return failure
        if not outcome.retryable(self._replay_policy):
            self._refuse(payload, outcome)
            return None
        leftovers.append(payload)
        return outcome

    def _replay_headers(self, kind: str, stored: Mapping[str, str]) -> Dict[str, str]:
        """Routing as recorded (the project the data belonged to), credentials and
        encoding as configured now."""
        current = self._headers(kind)
        merged = {
            name: value
            for name, value in stored.items()
            if name.lower() not in ("content-type", "content-encoding", "content-length")
        }
        for name, value in current.items():
            if name.lower() in ("authorization", "content-type", "content-encoding") or name not in merged:
                merged[name] = value
        return merged


class _PoisonTracker:
    """Counts consecutive 500s per spooled request across its trips through the spool."""

    WAIT, ROTATE, DROP = "wait", "rotate", "drop"
    ATTEMPTS = 5  # consecutive 500s before the request goes to the back
    ROTATIONS = 2  # trips to the back, with others delivered meanwhile, before it is dropped

    def __init__(self) -> None:
        self._head: Optional[str] = None
        self._consecutive = 0
        self._rotations: Dict[str, Tuple[int, int]] = {}

    def failed(self, entry: Any, replayed: int) -> str:
        if entry.id != self._head:
            self._head, self._consecutive = entry.id, 0
        self._consecutive += 1
        if self._consecutive < self.ATTEMPTS:
            return self.WAIT
        self._head, self._consecutive = None, 0
        digest = hashlib.sha256(entry.body).hexdigest()
        trips, replayed_at_first_trip = self._rotations.get(digest, (0, replayed))
        if trips >= self.ROTATIONS and replayed > replayed_at_first_trip:
            # Other requests got through since it first failed: it is this one.
            self._rotations.pop(digest, None)
            return self.DROP
        if len(self._rotations) > 1000:
            self._rotations.clear()
        self._rotations[digest] = (trips + 1, replayed_at_first_trip)
        return self.ROTATE

    def delivered(self, entry: Any) -> None:
        if entry.id == self._head:
            self._head, self._consecutive = None, 0
        if self._rotations:
            self._rotations.pop(hashlib.sha256(entry.body).hexdigest(), None)


# --- payloads: one request body, and how to make it smaller ---------------------------


# --- validating settings ----------------------------------------------------------------


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {type(value).__name__}.")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive, finite number of seconds, not {value!r}.")
    return float(value)


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, not {type(value).__name__}.")
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {value}.")
    return value


def _path_setting(name: str, value: Any) -> str:
    try:
        path = os.fspath(value)
    except TypeError:
        raise ConfigurationError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}.") from None
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise ConfigurationError(f"{name} must be a non-empty text path, not {path!r}.")
    return os.path.expanduser(path)


def _validated_verify(verify: Any) -> Union[bool, str]:
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, (str, os.PathLike)):
        path = _path_setting("verify", verify)
        if not (os.path.isfile(path) or os.path.isdir(path)):
            raise ConfigurationError(
                f"verify={path!r} is neither a CA bundle file nor a directory of certificates; give the "
                "path of the PEM file that signed Opik's certificate, or True to use the system's CAs."
            )
        return path
    raise ConfigurationError(f"verify must be True, False or the path of a CA bundle, not {type(verify).__name__}.")


def _validated_policy(name: str, policy: Any, default: RetryPolicy) -> RetryPolicy:
    if policy is None:
        return default
    if not isinstance(policy, RetryPolicy):
        raise ConfigurationError(f"{name} must be an opik_otel.retry.RetryPolicy, not {type(policy).__name__}.")
    return policy


def _validated_tags(tags: Any) -> List[str]:
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple, set, frozenset)):
        raise ConfigurationError(f"tags must be a list of strings, not {type(tags).__name__}.")
    result = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ConfigurationError(f"tags must be strings; got {type(tag).__name__}.")
        if needs_fix(tag):
            raise ConfigurationError(f"tag {tag!r} is not valid Unicode text.")
        result.append(tag)
    return result


def _validated_metadata(metadata: Any) -> Dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigurationError(f"metadata must be a mapping, not {type(metadata).__name__}.")
    result = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or needs_fix(key):
            raise ConfigurationError(f"metadata keys must be text strings; got {key!r}.")
        result[key] = value
    # Values need no check: dump_json writes anything odd as a string.
    return result


def _validated_thread_id(thread_id: Any) -> Optional[str]:
    if thread_id is None:
        return None
    if isinstance(thread_id, int) and not isinstance(thread_id, bool):
        return str(thread_id)
    if not isinstance(thread_id, str) or needs_fix(thread_id):
        raise ConfigurationError(f"thread_id must be a string, not {type(thread_id).__name__}.")
    return thread_id.strip() or None


def _validated_headers(headers: Any) -> Dict[str, str]:
    """Extra headers, refused at setup when they could not be sent or could inject
    headers (CR/LF), instead of failing every request later."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"headers must be a mapping of names to values, not {type(headers).__name__}.")
    result: Dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME(name):
            raise ConfigurationError(
                f"Header name {name!r} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)."
            )
        if name.lower() in _RESERVED_HEADERS:
            raise ConfigurationError(f"Header {name!r} is set by the exporter itself and cannot be given in headers=.")
        secret = any(marker in name.lower() for marker in _SECRET_HEADER_MARKERS)
        _validate_header_value(value, setting=f"the value of header {name!r}", secret=secret)
        result[name] = value
    return result


def _validated_endpoint(endpoint: Any) -> str:
    if not isinstance(endpoint, str):
        raise ConfigurationError(f"otlp_endpoint must be a URL string, not {type(endpoint).__name__}.")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"otlp_endpoint must be an OTLP/HTTP URL such as http://localhost:4318/v1/traces, "
            f"not {redact_url(endpoint)!r} (Opik has no gRPC ingest)."
        )
    if any(ch.isspace() or not ch.isprintable() or ord(ch) > 0x7E for ch in endpoint):
        raise ConfigurationError("otlp_endpoint contains spaces, control or non-ASCII characters.")
    try:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError as error:
        raise ConfigurationError(f"otlp_endpoint cannot be parsed ({error}).") from None
    if not parts.hostname:
        raise ConfigurationError("otlp_endpoint must name a host, e.g. http://localhost:4318/v1/traces.")
    return endpoint


def _default_spool_directory(endpoints: Mapping[str, str], config: OpikConfig) -> str:
    """A per-user, per-destination directory, so replays never cross destinations."""
    destination = "|".join([endpoints[SPANS], endpoints[TRACES], config.workspace, config.project_name])
    digest = hashlib.sha256(destination.encode("utf-8")).hexdigest()[:16]
    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"opik_otel-{user}", digest)
