"""``OpikExporter``: ships OTel spans to Opik's OTLP/HTTP endpoint, configured like Opik.

Spans are encoded with the standard OTLP protobuf encoder and sent gzip-compressed with
Opik's routing headers. Trace rows for traces this process minted go to Opik's REST API.
Sending never happens on the application's threads (the exporter runs behind a batching
processor); requests that fail with a retryable cause are retried with backoff, and
what still cannot be delivered waits in a bounded on-disk spool until Opik answers again.
"""

import gzip
import hashlib
import json
import os
import tempfile
import threading
import time
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._logging import get_logger
from .attributes import MINTED_TRACE, OPIK_TRACE_ID
from .config import ConfigurationError, OpikConfig, resolve_config
from .linkage import span_attributes
from .retry import RetryPolicy, describe_failure, parse_retry_after, redact_url
from .sizing import encoded_size, split_in_halves, truncate_span
from .spans import with_attributes
from .spool import DiskSpool
from .trace_rows import OPIK_METADATA, OPIK_TAGS, THREAD_ID_ATTRIBUTES, trace_row_from_span, trace_rows_request_body

LOGGER = get_logger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
# Opik Cloud refuses bodies of a few tens of MB; staying well below keeps one request's
# retry cheap too.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
# The first sends of a batch happen in the export call; after these it goes to the
# spool, whose replayer keeps trying with the full policy.
EXPORT_RETRY_POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.25, max_backoff=2.0)
REPLAY_RETRY_POLICY = RetryPolicy(max_attempts=1_000_000, initial_backoff=0.5, max_backoff=30.0)

_SPANS = "otlp"
_TRACES = "traces"
_USAGE_PREFIX = "gen_ai.usage."
_NOT_FOUND_STATUSES = (404, 405)


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

    @property
    def retryable(self) -> bool:
        return self.error is not None or (self.status is not None and EXPORT_RETRY_POLICY.should_retry_status(self.status))


class OpikExporter(SpanExporter):
    """Export spans to Opik over OTLP/HTTP, and create the trace rows this process owns.

    Configuration follows the Opik SDK: explicit arguments, then ``OPIK_*`` environment
    variables, then ``~/.opik.config``; invalid settings raise
    :class:`~opik_otel.config.ConfigurationError` here, never later in export.

    Args:
        url: Opik API base, e.g. ``http://localhost:5173/api``.
        api_key: Opik API key (sent raw in ``Authorization``; never logged).
        workspace: Opik workspace.
        project_name: project every span of this exporter goes to.
        tags: tags added to every trace this exporter roots.
        metadata: metadata added to every trace this exporter roots.
        thread_id: thread (conversation) id of every trace this exporter roots.
        timeout: seconds per HTTP request.
        headers: extra HTTP headers on span requests.
        compression: ``"gzip"`` (default) or ``None``.
        otlp_endpoint: send spans to this OTLP/HTTP traces URL (e.g. an OpenTelemetry
            Collector's ``http://collector:4318/v1/traces``) instead of Opik; trace rows
            still go to Opik's REST API.
        config_path: Opik config file to read instead of ``~/.opik.config``.
        max_request_bytes: requests above this are split in halves; a single span
            above it has its largest attribute values truncated.
        spool_directory: where undeliverable requests wait for Opik (default: a
            per-user directory under the system temp dir); ``False`` disables spooling.
        spool_max_bytes: size cap of the spool; the oldest data goes first.
        verify: TLS verification: ``True``, ``False`` or a CA bundle path.
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
        verify: Union[bool, str] = True,
    ) -> None:
        self._config: OpikConfig = resolve_config(url, api_key, workspace, project_name, config_path=config_path)
        if compression not in ("gzip", None):
            raise ConfigurationError(f"compression must be 'gzip' or None, not {compression!r}.")
        if max_request_bytes < 1024:
            raise ConfigurationError("max_request_bytes must be at least 1024.")
        self._tags = [str(tag) for tag in tags or ()]
        self._metadata = dict(metadata or {})
        self._thread_id = thread_id
        self._timeout = timeout
        self._compression = compression
        self._max_request_bytes = max_request_bytes
        self._verify = verify

        self._span_endpoint = _validated_endpoint(otlp_endpoint) if otlp_endpoint else self._config.otlp_traces_endpoint
        routing = self._config.headers()
        if otlp_endpoint:
            # A Collector adds Opik's credentials itself; the key stays in this process.
            routing.pop("Authorization", None)
        self._span_headers = {**routing, **dict(headers or {}), "Content-Type": "application/x-protobuf"}
        if compression == "gzip":
            self._span_headers["Content-Encoding"] = "gzip"
        self._rest_headers = {**self._config.headers(), "Content-Type": "application/json"}
        self._endpoints = {_SPANS: self._span_endpoint, _TRACES: self._config.traces_batch_endpoint}

        self._spool: Optional[DiskSpool] = None
        if spool_directory is not False:
            directory = spool_directory or _default_spool_directory(self._endpoints, self._config)
            self._spool = DiskSpool(directory, max_bytes=spool_max_bytes)

        self._shutdown = threading.Event()
        self._reset_process_state()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_call_if_alive(weakref.WeakMethod(self._reset_process_state)))
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

    # --- SpanExporter -------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send a batch; returns FAILURE only for data that was refused and dropped."""
        if self._shutdown.is_set():
            return SpanExportResult.FAILURE
        try:
            to_send, rows = self._prepare(spans)
            delivered = True
            if rows:
                body = json.dumps(trace_rows_request_body(rows)).encode("utf-8")
                delivered &= self._deliver(_TRACES, body)
            if to_send:
                delivered &= self._deliver_spans(to_send)
            return SpanExportResult.SUCCESS if delivered else SpanExportResult.FAILURE
        except Exception:
            LOGGER.error("Unexpected error while exporting spans to Opik.", exc_info=True)
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the spool has been replayed, at most ``timeout_millis``."""
        deadline = time.monotonic() + timeout_millis / 1000
        if self._spool is None:
            return True
        while len(self._spool) > 0:
            self._wake_replayer()
            if time.monotonic() >= deadline or self._shutdown.is_set():
                return False
            time.sleep(0.02)
        return True

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Stop the replayer; spooled data stays on disk for the next run."""
        if self._shutdown.is_set():
            return
        self._shutdown.set()
        self._replay_wanted.set()
        replayer = self._replayer
        if replayer is not None and replayer is not threading.current_thread():
            replayer.join(max(0.0, timeout_millis / 1000))
        with self._session_lock:
            self._session.close()
        if self._spool is not None:
            self._spool.close()

    # --- preparing a batch --------------------------------------------------------

    def _prepare(self, spans: Sequence[ReadableSpan]) -> Tuple[List[ReadableSpan], List[Dict[str, Any]]]:
        """Strip private markers, add trace-level options to root spans, collect trace rows."""
        prepared: List[ReadableSpan] = []
        rows: List[Dict[str, Any]] = []
        for span in spans:
            attributes = span_attributes(span)
            minted = attributes.get(MINTED_TRACE) is True
            changes = _invalid_usage_removals(attributes)
            if MINTED_TRACE in attributes:
                changes[MINTED_TRACE] = None
            if span.parent is None and (minted or OPIK_TRACE_ID not in attributes):
                changes.update(self._root_options(attributes))
            if changes:
                span = with_attributes(span, changes)
            if minted and span.parent is None:
                row = self._trace_row(span)
                if row is not None:
                    rows.append(row)
            prepared.append(span)
        return prepared, rows

    def _root_options(self, attributes: Mapping[str, Any]) -> Dict[str, Any]:
        """Trace-level options, written on a root span the way Opik reads them from it."""
        changes: Dict[str, Any] = {}
        if self._tags:
            existing = attributes.get(OPIK_TAGS)
            own = list(existing) if isinstance(existing, (list, tuple)) else ([existing] if existing else [])
            changes[OPIK_TAGS] = list(dict.fromkeys(self._tags + [str(tag) for tag in own]))
        if self._metadata:
            merged = dict(self._metadata)
            try:
                merged.update(json.loads(attributes.get(OPIK_METADATA) or "{}"))
            except (TypeError, ValueError):
                pass
            changes[OPIK_METADATA] = json.dumps(merged, default=str)
        if self._thread_id and not any(key in attributes for key in THREAD_ID_ATTRIBUTES):
            changes[THREAD_ID_ATTRIBUTES[0]] = self._thread_id
        return changes

    def _trace_row(self, root: ReadableSpan) -> Optional[Dict[str, Any]]:
        try:
            return trace_row_from_span(
                root,
                project_name=self._config.project_name,
                tags=self._tags,
                metadata=self._metadata,
                thread_id=self._thread_id,
            )
        except ValueError:
            LOGGER.warning("Could not build an Opik trace row from root span %r.", root.name, exc_info=True)
            return None

    # --- delivering ---------------------------------------------------------------

    def _deliver_spans(self, spans: List[ReadableSpan]) -> bool:
        """Send spans in requests under the size cap, splitting and truncating as needed."""
        body = encode_spans(spans).SerializeToString()
        if len(body) > self._max_request_bytes:
            if len(spans) > 1:
                first, second = split_in_halves(spans)
                return self._deliver_spans(first) & self._deliver_spans(second)
            span = truncate_span(spans[0], self._max_request_bytes)
            body = encode_spans([span]).SerializeToString()
        outcome = self._deliver(_SPANS, body)
        if outcome is _TOO_LARGE:
            if len(spans) > 1:
                first, second = split_in_halves(spans)
                return self._deliver_spans(first) & self._deliver_spans(second)
            smaller = truncate_span(spans[0], max(1024, encoded_size(spans) // 2))
            return self._deliver(_SPANS, encode_spans([smaller]).SerializeToString()) is True
        return outcome is True

    def _deliver(self, kind: str, body: bytes) -> Any:
        """Send now, or spool: True when delivered or kept, False when refused,
        ``_TOO_LARGE`` when the server wants smaller requests."""
        if self._spool is not None and len(self._spool) > 0:
            return self._keep(kind, body)  # replay order: older spooled data goes first
        attempt = 0
        while True:
            attempt += 1
            outcome = self._post(kind, body)
            if outcome.ok:
                return True
            if outcome.status == 413:
                return _TOO_LARGE
            if not outcome.retryable:
                self._report_refusal(kind, outcome)
                return False
            if not EXPORT_RETRY_POLICY.has_attempts_left(attempt) or self._shutdown.is_set():
                LOGGER.warning("%s", describe_failure(outcome.status, outcome.error, self._endpoints[kind]))
                return self._keep(kind, body)
            if self._shutdown.wait(EXPORT_RETRY_POLICY.delay(attempt, outcome.retry_after)):
                return self._keep(kind, body)

    def _keep(self, kind: str, body: bytes) -> bool:
        if self._spool is None:
            LOGGER.error("Opik is unreachable and spooling is disabled: %s data dropped.", kind)
            return False
        stored = self._spool.append(kind, body, self._headers(kind))
        self._wake_replayer()
        return stored

    def _report_refusal(self, kind: str, outcome: _Outcome) -> None:
        message = describe_failure(outcome.status, outcome.error, self._endpoints[kind])
        if outcome.status in _NOT_FOUND_STATUSES:
            LOGGER.error("%s", message)
        else:
            LOGGER.warning("%s", message)

    def _headers(self, kind: str) -> Dict[str, str]:
        return self._span_headers if kind == _SPANS else self._rest_headers

    def _post(self, kind: str, body: bytes) -> _Outcome:
        headers = self._headers(kind)
        if kind == _SPANS and self._compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        try:
            with self._session_lock:
                response = self._session.post(
                    self._endpoints[kind], data=body, headers=headers, timeout=self._timeout, verify=self._verify
                )
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            return _Outcome(response.status_code, retry_after=retry_after)
        except requests.RequestException as error:
            return _Outcome(None, error=error)

    # --- spool replay -------------------------------------------------------------

    def _reset_process_state(self) -> None:
        """(Re)create what a process cannot share with its parent after ``fork``."""
        self._session = requests.Session()
        self._session_lock = threading.Lock()
        self._replay_wanted = threading.Event()
        self._replayer: Optional[threading.Thread] = None

    def _wake_replayer(self) -> None:
        self._replay_wanted.set()
        if self._shutdown.is_set():
            return
        replayer = self._replayer
        if replayer is None or not replayer.is_alive():
            self._replayer = threading.Thread(target=self._replay, name="OpikExporterReplay", daemon=True)
            self._replayer.start()

    def _replay(self) -> None:
        spool = self._spool
        assert spool is not None
        attempt = 0
        while not self._shutdown.is_set():
            entry = spool.peek_oldest()
            if entry is None:
                self._replay_wanted.clear()
                if len(spool) == 0:
                    return
                continue
            outcome = self._post(entry.kind, entry.body) if entry.kind in self._endpoints else _Outcome(400)
            if outcome.ok or not outcome.retryable:
                if not outcome.ok:
                    self._report_refusal(entry.kind, outcome)
                spool.remove(entry)
                attempt = 0
                continue
            attempt += 1
            self._shutdown.wait(REPLAY_RETRY_POLICY.delay(attempt, outcome.retry_after))


_TOO_LARGE = object()


def _call_if_alive(method: "weakref.WeakMethod[Any]") -> Any:
    def call() -> None:
        bound = method()
        if bound is not None:
            bound()

    return call


def _invalid_usage_removals(attributes: Mapping[str, Any]) -> Dict[str, Any]:
    """Usage attributes Opik would reject the whole request for (non-JSON strings)."""
    removals: Dict[str, Any] = {}
    for key, value in attributes.items():
        if type(value) is str and key.startswith(_USAGE_PREFIX):
            try:
                json.loads(value)
            except ValueError:
                LOGGER.warning(
                    "Span attribute '%s' is a string that is not JSON; Opik would refuse the "
                    "whole batch for it, so it is left out.",
                    key,
                )
                removals[key] = None
    return removals


def _validated_endpoint(endpoint: str) -> str:
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"otlp_endpoint must be an OTLP/HTTP URL such as http://localhost:4318/v1/traces, "
            f"not {redact_url(endpoint)!r} (Opik has no gRPC ingest)."
        )
    return endpoint


def _default_spool_directory(endpoints: Mapping[str, str], config: OpikConfig) -> str:
    """A per-user, per-destination directory, so replays never cross destinations."""
    destination = "|".join([endpoints[_SPANS], endpoints[_TRACES], config.workspace, config.project_name])
    digest = hashlib.sha256(destination.encode("utf-8")).hexdigest()[:16]
    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"opik_otel-{user}", digest)
