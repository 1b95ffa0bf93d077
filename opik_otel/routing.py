"""Where each queued record goes, and with which headers.

Records are stored with their routing (destination without credentials, workspace,
project, encoding) and no secret; :meth:`Destinations.route` adds the API key and the
custom headers at send time, as configured then.
"""

import hashlib
from typing import Dict, Mapping, Optional, Tuple

from .config import OpikConfig
from .encoding import gzip_compress
from .payloads import SPANS, TRACES
from .queue import Record
from .queue.records import is_header_value, without_credentials


class Destinations:
    """The span and trace-row endpoints of one exporter, and how to address them.

    Args:
        config: the resolved Opik settings (URL, API key, workspace, project).
        span_endpoint: where OTLP spans go (Opik's, or a Collector's).
        via_collector: spans go through a Collector, which adds Opik's credentials.
        extra_headers: custom headers of span requests.
        gzip_spans: span bodies are stored gzip-compressed.
    """

    def __init__(
        self,
        config: OpikConfig,
        span_endpoint: str,
        *,
        via_collector: bool,
        extra_headers: Mapping[str, str],
        gzip_spans: bool,
    ) -> None:
        self._config = config
        self._endpoints = {SPANS: span_endpoint, TRACES: config.traces_batch_endpoint}
        self.via_collector = via_collector
        self._extra_headers = dict(extra_headers)
        self._gzip_spans = gzip_spans

    @property
    def span_endpoint(self) -> str:
        """Where OTLP spans go."""
        return self._endpoints[SPANS]

    def queue_key(self) -> str:
        """Names the queue directory: records of different destinations never share one."""
        destination = "|".join([self._endpoints[SPANS], self._endpoints[TRACES], self._config.workspace])
        return hashlib.sha256(destination.encode("utf-8")).hexdigest()[:16]

    def record(self, kind: str, body: bytes, items: int, project: Optional[str] = None) -> Record:
        """A queue record of ``kind`` (spans or trace rows) for ``project``."""
        gzipped = kind == SPANS and self._gzip_spans
        return Record(
            kind=kind,
            body=gzip_compress(body) if gzipped else body,
            destination=without_credentials(self._endpoints[kind]),
            project=project or self._config.project_name,
            workspace=self._config.workspace,
            content_type="application/x-protobuf" if kind == SPANS else "application/json",
            content_encoding="gzip" if gzipped else None,
            items=items,
        )

    def route(self, record: Record) -> Tuple[str, Dict[str, str]]:
        """Where and with which headers to send ``record``: routing as stored,
        credentials and custom headers as configured now. ``ValueError`` when a header
        value cannot be sent."""
        configured = self._endpoints.get(record.kind)
        if configured is None:
            raise ValueError(f"unknown kind {record.kind!r}")
        url = configured if without_credentials(configured) == record.destination else record.destination
        headers: Dict[str, str] = {"Comet-Workspace": record.workspace, "Content-Type": record.content_type}
        if record.project is not None:
            headers["projectName"] = record.project
        if record.content_encoding is not None:
            headers["Content-Encoding"] = record.content_encoding
        if self._config.api_key is not None and not (record.kind == SPANS and self.via_collector):
            # A Collector adds Opik's credentials itself; the key stays in this process.
            headers["Authorization"] = self._config.api_key
        if record.kind == SPANS:
            headers.update(self._extra_headers)
        for name, value in headers.items():
            if not is_header_value(value):
                raise ValueError(f"the {name} header value cannot be sent")
        return url, headers
