"""The HTTP front of LocalOpik: Opik's ingest endpoints on 127.0.0.1, status codes,
authentication, body limits and the injected faults tests use."""

import dataclasses
import json
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from opik_otel.testing.decoding import (
    HttpError,
    content_media_type,
    decode_content,
    parse_otlp,
    read_chunked,
)
from opik_otel.testing.records import RequestRecord
from opik_otel.testing.store import TRACES_BATCH_PATH, OpikStore

DEFAULT_PROJECT = "Default Project"
DEFAULT_WORKSPACE = "default"
# The backend's own limit on the wire; Opik Cloud is stricter (contract §1).
DEFAULT_MAX_BODY_BYTES = 512 * 1024 * 1024

API_PREFIX = "/api"
OTLP_TRACES_PATH = "/api/v1/private/otel/v1/traces"
OTLP_METRICS_PATH = "/api/v1/private/otel/v1/metrics"
# The Opik SDK checks this before flushing and at exit.
HEALTH_PATH = "/api/is-alive/ping"
SPANS_BATCH_PATH = "/api/v1/private/spans/batch"
_WRITE_PATHS = (OTLP_TRACES_PATH, TRACES_BATCH_PATH, SPANS_BATCH_PATH)

# Header names whose values must never reach a log, a repr or a request record.
_SECRET_HEADER_MARKERS = ("authorization", "cookie", "key", "token", "secret", "password")
_DRAIN_LIMIT = 1024 * 1024 * 1024


def _redact_headers(items: Sequence[Tuple[str, str]]) -> Dict[str, str]:
    redacted = {}
    for name, value in items:
        secret = any(marker in name.lower() for marker in _SECRET_HEADER_MARKERS)
        redacted[name] = "***" if secret else value
    return redacted


def _format_retry_after(value: Union[float, str]) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclasses.dataclass
class _Response:
    status: int
    message: Optional[str] = None
    headers: Dict[str, str] = dataclasses.field(default_factory=dict)
    injected: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for handlers sleeping in delay()
    allow_reuse_address = True  # accept_connections() re-binds the same port
    local_opik: "LocalOpik"

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            self.local_opik._warn(f"server error: {exc!r}")


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalOpik"
    # HTTP/1.0 closes each connection, so refuse_connections() really cuts clients off
    # instead of leaving pooled keep-alive connections talking to the old socket.
    protocol_version = "HTTP/1.0"
    # A client that promises more body than it sends must not pin a thread forever.
    timeout = 10.0
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def _dispatch(self) -> None:
        self.server.local_opik._handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; every request is in LocalOpik.requests



class LocalOpik(OpikStore):
    """An Opik ingest server on ``127.0.0.1`` that records what Opik would store.

    Args:
        api_key: when set, every request must carry ``Authorization: <api_key>`` (the raw
            key, no ``Bearer``) or gets 401.
        workspace: workspace assumed when a request has no ``Comet-Workspace`` header
            (default ``default``).
        max_body_bytes: request bodies larger than this (on the wire) get 413; also
            settable at run time through the attribute of the same name.
        trace_id_ttl_seconds: lifetime of a derived trace id in the cache, refreshed on
            use; a later batch of the same OTel trace gets a new id (the trace splits, as
            with the backend's 3 h Redis TTL). ``None`` keeps ids forever.
        port: port to bind; 0 lets the OS choose.

    Records are returned as deep copies, so callers may mutate them freely. Thread safe.
    """


    def __init__(
        self,
        api_key: Optional[str] = None,
        workspace: Optional[str] = None,
        max_body_bytes: Optional[int] = None,
        trace_id_ttl_seconds: Optional[float] = None,
        *,
        port: int = 0,
    ) -> None:
        super().__init__(workspace or DEFAULT_WORKSPACE, trace_id_ttl_seconds)
        self._api_key = api_key
        self.max_body_bytes = DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
        self._port = port
        self._lifecycle = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._running = False
        self._fail_remaining = 0
        self._fail_status = 503
        self._fail_retry_after: Optional[Union[float, str]] = None
        self._delay_seconds = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "LocalOpik":
        """Start serving (idempotent); returns ``self``."""
        with self._lifecycle:
            self._running = True
            if self._server is None:
                self._bind()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; recorded data stays queryable."""
        with self._lifecycle:
            self._running = False
            self._close()

    def __enter__(self) -> "LocalOpik":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _bind(self) -> None:
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.local_opik = self
        self._port = server.server_address[1]
        # A short poll interval keeps shutdown() (hence stop()) in the tens of ms.
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"LocalOpik:{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _close(self) -> None:
        server, self._server, self._thread = self._server, None, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def port(self) -> int:
        """The bound port (stable across refuse/accept_connections)."""
        if not self._port:
            raise RuntimeError("LocalOpik has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The Opik API base URL, e.g. ``http://127.0.0.1:50123/api``."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def otlp_endpoint(self) -> str:
        """The OTLP base to put in ``OTEL_EXPORTER_OTLP_ENDPOINT`` (exporters add ``/v1/traces``)."""
        return f"{self.url}/v1/private/otel"

    @property
    def otlp_traces_endpoint(self) -> str:
        """The full OTLP/HTTP traces ingest URL."""
        return f"http://127.0.0.1:{self.port}{OTLP_TRACES_PATH}"

    def __repr__(self) -> str:
        where = f"http://127.0.0.1:{self._port}{API_PREFIX}" if self._port else "not started"
        auth = "on" if self._api_key is not None else "off"
        with self._cond:
            counts = f"traces={len(self._traces)}, spans={len(self._spans)}"
        return f"LocalOpik({where}, auth={auth}, {counts})"

    # ------------------------------------------------------------ fault injection

    def fail_next(
        self, n: int, status: int = 503, retry_after: Optional[Union[float, str]] = None
    ) -> None:
        """Answer ``status`` to the next ``n`` write requests and store nothing from them.

        Applies to the OTLP traces and REST batch paths. With ``retry_after`` the answer
        carries a ``Retry-After`` header (seconds, or an HTTP date string).
        """
        with self._cond:
            self._fail_remaining = n
            self._fail_status = status
            self._fail_retry_after = retry_after

    def refuse_connections(self) -> None:
        """Close the listening socket: connections are refused until accept_connections()."""
        with self._lifecycle:
            self._close()

    def accept_connections(self) -> None:
        """Listen again on the same port after refuse_connections()."""
        with self._lifecycle:
            if self._running and self._server is None:
                self._bind()

    @contextmanager
    def down(self) -> Iterator["LocalOpik"]:
        """Refuse connections for the duration of the ``with`` block."""
        self.refuse_connections()
        try:
            yield self
        finally:
            self.accept_connections()

    def delay(self, seconds: float) -> None:
        """Delay every response by ``seconds`` (0 turns the delay off)."""
        self._delay_seconds = max(0.0, float(seconds))

    # ------------------------------------------------------------- request handling

    def _handle(self, handler: _Handler) -> None:
        delay = self._delay_seconds
        if delay:
            time.sleep(delay)
        headers = handler.headers
        path = urlsplit(handler.path).path
        project = (headers.get("projectName") or "").strip() or DEFAULT_PROJECT
        workspace = (headers.get("Comet-Workspace") or "").strip() or self.default_workspace
        body_size = [0]
        try:
            response = self._process(handler, path, project, workspace, body_size)
        except Exception as exc:  # a bug here must still produce an answer
            response = _Response(500, f"LocalOpik internal error: {exc!r}")
            self._warn(response.message or "")
        with self._cond:
            self._stats["requests_received"] += 1
            if response.injected:
                self._stats["injected_failures"] += 1
            self._requests.append(
                RequestRecord(
                    method=handler.command,
                    path=path,
                    headers=_redact_headers(list(headers.items())),
                    content_type=headers.get("Content-Type"),
                    content_encoding=headers.get("Content-Encoding"),
                    body_size=body_size[0],
                    status=response.status,
                    project=project,
                    workspace=workspace,
                    injected=response.injected,
                    error=response.message if response.status >= 400 else None,
                    received_at=time.time(),
                )
            )
            self._cond.notify_all()
        self._send(handler, response)

    def _send(self, handler: _Handler, response: _Response) -> None:
        body = b""
        if response.status >= 400 and response.message is not None:
            body = json.dumps({"code": response.status, "message": response.message}).encode()
        try:
            handler.send_response(response.status)
            for name, value in response.headers.items():
                handler.send_header(name, value)
            if body:
                handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            if body and handler.command != "HEAD":
                handler.wfile.write(body)
        except OSError:
            pass  # the client gave up (e.g. its timeout fired during delay())

    def _process(
        self, handler: _Handler, path: str, project: str, workspace: str, body_size: List[int]
    ) -> _Response:
        method = handler.command
        if path == HEALTH_PATH and method == "GET":
            return _Response(200, "")
        if path == OTLP_METRICS_PATH and method == "POST":
            self._drain(handler)
            return _Response(501, "Opik ingests OTLP traces only; metrics are not supported")
        if path not in _WRITE_PATHS and path != OTLP_METRICS_PATH:
            self._drain(handler)
            return _Response(404, f"no such endpoint: {path}")
        if method != "POST":
            self._drain(handler)
            return _Response(405, f"{method} not allowed on {path}", {"Allow": "POST"})
        with self._cond:
            if self._fail_remaining > 0:
                self._fail_remaining -= 1
                injected = _Response(self._fail_status, "injected failure", injected=True)
                if self._fail_retry_after is not None:
                    injected.headers["Retry-After"] = _format_retry_after(self._fail_retry_after)
            else:
                injected = None
        if injected is not None:
            body_size[0] = self._drain(handler)
            return injected
        if self._api_key is not None and handler.headers.get("Authorization") != self._api_key:
            self._drain(handler)
            return _Response(401, "missing or invalid API key in the Authorization header")
        try:
            body = self._read_body(handler, body_size)
            data = decode_content(body, handler.headers.get("Content-Encoding"))
            if path == OTLP_TRACES_PATH:
                self._ingest_otlp(parse_otlp(data, content_media_type(handler.headers)), project, workspace)
                return _Response(200)
            self._ingest_rest(path, data, project, workspace)
            return _Response(204)
        except HttpError as exc:
            return _Response(exc.status, exc.message)

    def _read_body(self, handler: _Handler, body_size: List[int]) -> bytes:
        limit = self.max_body_bytes
        if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
            body, total = read_chunked(handler.rfile, limit)
            body_size[0] = total
        else:
            raw = (handler.headers.get("Content-Length") or "").strip()
            if not raw.isdigit():
                raise HttpError(400, f"bad Content-Length {raw!r}")
            length = int(raw)
            if length > limit:
                body_size[0] = self._drain(handler)
                raise HttpError(413, f"body of {length} bytes exceeds the {limit} byte limit")
            try:
                body = handler.rfile.read(length)
            except OSError as exc:
                raise HttpError(400, f"could not read the body: {exc}") from exc
            body_size[0] = total = len(body)
            if total < length:
                raise HttpError(400, "body shorter than Content-Length")
        if total > limit:
            raise HttpError(413, f"body of {total} bytes exceeds the {limit} byte limit")
        return body

    @staticmethod
    def _drain(handler: _Handler) -> int:
        # Reading the body we are going to reject lets the client see our status instead
        # of a connection reset while it is still sending.
        raw = (handler.headers.get("Content-Length") or "").strip()
        remaining = min(int(raw), _DRAIN_LIMIT) if raw.isdigit() else 0
        total = 0
        try:
            while remaining > 0:
                chunk = handler.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                total += len(chunk)
                remaining -= len(chunk)
        except OSError:
            pass
        return total
