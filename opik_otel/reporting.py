"""What the export path counts and tells the user: counters and one line per cause."""

import threading
import time
from collections import Counter
from typing import Any, Dict, Optional, Tuple

from ._logging import DEFAULT_INTERVAL_SECONDS, RATE_LIMIT_KEY, get_logger
from .http_values import redact_url
from .payloads import SPANS
from .retry import describe_failure
from .transport import Answer

LOGGER = get_logger("opik_otel.exporter")

COUNTERS = (
    "requests_sent",
    "requests_retried",
    "requests_split",
    "requests_refused",
    "requests_quarantined",
    "requests_lost",
    "spans_truncated",
    "trace_rows_truncated",
    "spans_unencodable",
)


class Reporter:
    """Thread-safe counters and rate-limited log lines for one exporter."""

    def __init__(self, via_collector: bool) -> None:
        self._via_collector = via_collector
        self._lock = threading.Lock()
        self._counts: "Counter[str]" = Counter()
        self._logged: Dict[Tuple[Any, ...], float] = {}

    @property
    def peer(self) -> str:
        """Who receives spans: named in messages so the user looks at the right server."""
        return "the OTLP endpoint (Collector)" if self._via_collector else "Opik"

    def count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[key] += amount

    def counts(self) -> Dict[str, int]:
        with self._lock:
            result = dict(self._counts)
        for key in COUNTERS:
            result.setdefault(key, 0)
        return result

    def log_cause(self, cause: Tuple[Any, ...], level: str, message: str, *args: Any) -> None:
        """Log ``message`` at most once per interval for each distinct ``cause``.

        The package filter limits by template; one template serves several causes here,
        so the cause is passed as the key it limits by.
        """
        now = time.monotonic()
        with self._lock:
            last = self._logged.get(cause)
            if last is not None and now - last < DEFAULT_INTERVAL_SECONDS:
                return
            if len(self._logged) > 256:
                self._logged.clear()
            self._logged[cause] = now
        getattr(LOGGER, level)(message, *args, extra={RATE_LIMIT_KEY: cause})

    def describe(self, kind: str, url: str, answer: Answer) -> str:
        """One actionable line about a failed request to ``url``."""
        safe = redact_url(url)
        status = answer.status
        if answer.not_delivery is not None:
            return f"{safe} answered HTTP {status} but {answer.not_delivery}; check the URL. The data stays queued."
        if status is not None and 300 <= status < 400:
            target = redact_url(answer.location) if answer.location else "another URL"
            return (
                f"{safe} answered with a redirect (HTTP {status}) to {target}; redirects are not followed: "
                "configure the final URL of "
                + ("the OTLP endpoint" if kind == SPANS and self._via_collector else "Opik's API")
                + " (e.g. https:// instead of http://, or without a login proxy). The data stays queued."
            )
        if kind == SPANS and self._via_collector:
            if status in (401, 403):
                return (
                    f"The OTLP endpoint {safe} rejected the request (HTTP {status}): check the headers= "
                    "given for it (the Collector adds Opik's credentials). The data stays queued."
                )
            if status in (404, 405):
                return (
                    f"{safe} is not an OTLP/HTTP traces endpoint (HTTP {status}): check otlp_endpoint; it "
                    "must be the full URL, e.g. http://collector:4318/v1/traces. The data stays queued."
                )
            text = describe_failure(status, answer.error, url)
            return text.replace("Opik at", "The Collector at").replace("Opik is", "The Collector is").replace(
                "Opik did", "The Collector did"
            )
        return describe_failure(status, answer.error, url)

    def unreachable(self, kind: str, url: str, answer: Answer) -> None:
        cause = ("retry", kind, answer.status, type(answer.error).__name__ if answer.error else None)
        self.log_cause(cause, "warning", "%s", self.describe(kind, url, answer))

    def truncated(self, kind: str, limit: Optional[int]) -> None:
        self.count("spans_truncated" if kind == SPANS else "trace_rows_truncated")
        self.log_cause(
            ("truncated", kind),
            "warning",
            "A %s too large for one request (limit about %s bytes) had its largest values truncated; each "
            "cut value ends with a '[truncated N bytes by opik_otel]' marker.",
            "span" if kind == SPANS else "trace row",
            limit if limit is not None else "?",
        )
