"""When and how long to wait before sending a failed batch to Opik again, and what to tell the user.

Everything here is pure: no I/O, no sleeping, no module state. The exporter decides what to do with
the answers (wait, keep queued, split, set aside).
"""

import email.utils
import math
import random
import re
import time
from dataclasses import dataclass
from datetime import timezone
from typing import Optional
import requests

from .http_values import redact_url

# Opik itself does not rate-limit the OTLP endpoint, but proxies and load balancers in front of it
# answer 429/503 and gateways 502/504 (contract §1), so all of them are worth another try.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# A server asking for more than this is treated as asking for this: an exporter thread must not be
# parked for an hour on a proxy's say-so while the queue can hold the data meanwhile.
MAX_RETRY_AFTER_SECONDS = 300.0

# Longest exception text quoted in a failure message; requests' messages can be very long.
_MAX_ERROR_TEXT = 300

_DELAY_SECONDS = re.compile(r"\d+(?:\.\d+)?").fullmatch
# ``scheme://user:pass@host`` inside free text such as an exception message.
_USERINFO_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
# ``Authorization: xyz`` / ``'Authorization': 'xyz'`` inside free text.
_AUTH_IN_TEXT = re.compile(
    r"(?P<name>(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+", re.IGNORECASE
)


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Turn a ``Retry-After`` header value into a number of seconds to wait.

    Accepts delay-seconds (``"120"``, also ``"1.5"``) and HTTP-dates
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). Returns ``None`` for a missing, negative, non-finite or
    unparsable value, ``0.0`` for a date already in the past, and never more than
    :data:`MAX_RETRY_AFTER_SECONDS`. ``now`` (epoch seconds) exists for tests.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELAY_SECONDS(text):
        seconds = float(text)
        if not math.isfinite(seconds):
            return None
        return min(seconds, MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        # RFC 9110: HTTP-dates are always GMT, even in the obsolete formats without a zone.
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - current), MAX_RETRY_AFTER_SECONDS)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for sending a batch to Opik.

    ``max_attempts`` counts every send, the first one included. Attempt ``n`` (1-based) that failed
    is followed by a wait of ``initial_backoff * multiplier ** (n - 1)``, capped at
    ``max_backoff`` and then shortened by a random fraction of up to ``jitter``.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff values must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def delay(
        self,
        attempt: int,
        retry_after: Optional[float] = None,
        rng: Optional[random.Random] = None,
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        A server's ``retry_after`` (already parsed, see :func:`parse_retry_after`) wins over the
        computed backoff, is used without jitter (the server chose the moment) but is capped at
        ``max_backoff``: a caller that prefers to honour a longer wait should compare the hint with
        ``max_backoff`` itself and leave the batch queued instead of sleeping.

        Jitter only ever shortens the wait, so ``max_backoff`` is a hard bound and clients that hit
        the cap at the same time still spread out.
        """
        if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
            return min(float(retry_after), self.max_backoff)
        exponent = max(0, attempt - 1)
        try:
            base = self.initial_backoff * self.multiplier**exponent
        except OverflowError:
            base = self.max_backoff
        base = min(base, self.max_backoff)
        draw = (rng or random).random()
        return base * (1.0 - self.jitter * draw)

    def should_retry_status(self, status: int) -> bool:
        """Whether an HTTP ``status`` from Opik (or a proxy in front of it) is worth another try."""
        return status in RETRYABLE_STATUS

    def has_attempts_left(self, attempt: int) -> bool:
        """Whether another send may follow failed attempt number ``attempt`` (1-based)."""
        return attempt < self.max_attempts


def _redact_text(text: str) -> str:
    text = _USERINFO_IN_TEXT.sub(r"\g<scheme>", text)
    return _AUTH_IN_TEXT.sub(r"\g<name>***", text)


def _describe_error(error: BaseException) -> str:
    text = _redact_text(str(error))
    if len(text) > _MAX_ERROR_TEXT:
        text = text[: _MAX_ERROR_TEXT - 1] + "…"
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def _describe_exception(error: BaseException, url: str) -> str:
    detail = _describe_error(error)
    # SSLError is a ConnectionError in requests, so it must be checked first.
    if isinstance(error, requests.exceptions.SSLError):
        return (
            f"TLS with Opik at {url} failed ({detail}); check the certificate setup, or use "
            "http:// for a local Opik without TLS. The data stays queued and is retried."
        )
    if isinstance(error, (requests.exceptions.ConnectionError, ConnectionError)):
        return (
            f"Opik is unreachable at {url} ({detail}); check that Opik is running and the URL "
            "is right. The data stays queued and is retried."
        )
    if isinstance(error, (requests.exceptions.Timeout, TimeoutError)):
        return (
            f"Opik did not answer in time at {url} ({detail}). "
            "The data stays queued and is retried."
        )
    if isinstance(
        error,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ),
    ):
        return (
            f"{url} is not a usable URL ({detail}); expected e.g. "
            "https://www.comet.com/opik/api or http://localhost:5173/api."
        )
    return f"Sending spans to Opik at {url} failed ({detail})."


def _describe_status(status: int, url: str) -> str:
    if status in (401, 403):
        return (
            f"Opik rejected the credentials (HTTP {status}) at {url}: check OPIK_API_KEY and "
            "OPIK_WORKSPACE (the key is sent as-is in the Authorization header, without 'Bearer')."
        )
    if status in (404, 405):
        hint = ""
        if ":4317" in url:
            hint = " Port 4317 is OTLP/gRPC, which Opik does not offer: use OTLP/HTTP."
        return (
            f"{url} is not an Opik API base URL (HTTP {status}): expected e.g. "
            "https://www.comet.com/opik/api (Opik Cloud) or http://localhost:5173/api "
            "(self-hosted); check OPIK_URL_OVERRIDE." + hint
        )
    if status == 413:
        return (
            f"Opik rejected the request as too large (HTTP 413) at {url}; the batch will be "
            "split and oversized attribute values truncated."
        )
    if status == 400:
        return (
            f"Opik rejected the request as malformed (HTTP 400) at {url}; a common cause is a "
            "gen_ai.usage.* attribute that is not valid JSON. The batch is not retried."
        )
    if status == 501:
        return (
            f"Opik does not implement {url} (HTTP 501): it ingests only traces over OTLP/HTTP, "
            "no metrics or logs."
        )
    if status in RETRYABLE_STATUS:
        extra = " (it may also mean Opik could not parse the body)" if status == 500 else ""
        return (
            f"Opik at {url} answered HTTP {status}, usually temporary{extra}. "
            "The data stays queued and is retried."
        )
    if 300 <= status < 400:
        return (
            f"Opik at {url} answered with a redirect (HTTP {status}); configure the final URL "
            "(for example https:// instead of http://)."
        )
    if 400 <= status < 500:
        return f"Opik rejected the request with HTTP {status} at {url}; the batch is not retried."
    return f"Opik at {url} answered HTTP {status}."


def describe_failure(status: Optional[int], error: Optional[BaseException], url: str) -> str:
    """A one-line, actionable explanation of a failed send to ``url``, safe to log.

    The HTTP ``status`` wins over ``error`` when both are given. Credentials in the URL and
    ``Authorization`` values quoted in the exception text are removed; nothing else secret is
    ever passed in.
    """
    safe_url = redact_url(url)
    if status is not None:
        return _describe_status(status, safe_url)
    if error is not None:
        return _describe_exception(error, safe_url)
    return f"Sending spans to Opik at {safe_url} failed for an unknown reason."
