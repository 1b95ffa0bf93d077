"""One HTTP POST with a total deadline, and what its answer means.

``requests``' ``timeout`` bounds each socket operation, not the request: a server that
accepts the connection and then trickles its answer a byte at a time would hold the
sender for ever. Here every request gets one deadline for connect, send and the whole
answer: a watchdog shuts the connection's socket when it passes, and the answer is read
in chunks checked against it. Redirects are never followed (a redirect to a login page
would be "delivered" into nowhere), and a success answer that is an HTML page is not
taken as delivery.
"""

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

from .retry import parse_retry_after

# Answers longer than this are not read to the end: Opik's are empty or tiny.
_MAX_ANSWER_BYTES = 64 * 1024

DELIVERED = "delivered"
RETRY = "retry"
TOO_LARGE = "too_large"
REFUSED = "refused"


@dataclass(frozen=True)
class Answer:
    """How one request ended: an HTTP status, or the error that prevented one."""

    status: Optional[int] = None
    error: Optional[BaseException] = None
    retry_after: Optional[float] = None
    location: Optional[str] = None
    # Why a 2xx is not taken as delivery (an HTML page: a proxy's login form), if so.
    not_delivery: Optional[str] = None

    @property
    def timed_out(self) -> bool:
        return isinstance(self.error, (requests.exceptions.Timeout, DeadlineExceeded))


class DeadlineExceeded(Exception):
    """The request's total deadline passed before the whole answer was read."""


def classify(answer: Answer, retryable_status: "frozenset[int]") -> str:
    """:data:`DELIVERED`, :data:`RETRY`, :data:`TOO_LARGE` or :data:`REFUSED`.

    Errors without a status (connection refused, deadline) are retried; so is a 2xx
    that is not a delivery (it may be a proxy's page while Opik is being set up).
    Redirects are refusals: following one would post the data where it does not belong.
    """
    if answer.status is None:
        return RETRY
    if 200 <= answer.status < 300:
        return DELIVERED if answer.not_delivery is None else RETRY
    if answer.status == 413:
        return TOO_LARGE
    if answer.status in retryable_status:
        return RETRY
    return REFUSED


def not_a_delivery(status: int, content_type: str, head: bytes) -> Optional[str]:
    """Why a 2xx answer does not confirm delivery, or ``None`` when it does.

    Opik answers OTLP with an empty 200 and the REST batch with an empty or JSON 2xx;
    proxies' login and error pages are HTML.
    """
    if not 200 <= status < 300:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    start = head.lstrip()[:15].lower()
    if media in ("text/html", "application/xhtml+xml") or start.startswith((b"<!doctype html", b"<html")):
        return "it answered with an HTML page (a proxy's or login page?), not Opik's empty answer"
    return None


class Transport:
    """Sends one request at a time (one sender thread), each within its deadline."""

    def __init__(self, verify: Union[bool, str]) -> None:
        self._verify = verify
        self._session = requests.Session()
        self._adapter = _WatchedAdapter()
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)

    def post(self, url: str, body: bytes, headers: Mapping[str, str], seconds: float) -> Answer:
        """POST ``body``; the whole exchange ends within ``seconds``. Never raises."""
        deadline = time.monotonic() + max(0.0, seconds)
        watch = self._adapter.watch(deadline)
        try:
            response = self._session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=max(0.001, seconds),
                verify=self._verify,
                auth=_headers_as_given,
                allow_redirects=False,
                stream=True,
            )
            try:
                head = _read_answer(response, deadline)
                return Answer(
                    response.status_code,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    location=response.headers.get("Location"),
                    not_delivery=not_a_delivery(response.status_code, response.headers.get("Content-Type", ""), head),
                )
            finally:
                response.close()
        except Exception as error:  # requests' errors, an unreadable CA bundle: never escapes
            if watch.fired:
                return Answer(error=DeadlineExceeded(f"no complete answer within {seconds:.1f} s"))
            return Answer(error=error)
        finally:
            watch.cancel()

    def close(self) -> None:
        try:
            self._session.close()
        except Exception:  # closing is best effort
            pass


def _headers_as_given(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An auth hook that adds nothing. Without one, requests reads ``~/.netrc`` on every
    request and replaces the API key's ``Authorization`` header with Basic credentials
    found there for the host. It would also import ``netrc`` at the first request, and a
    child forked while a parent thread held that import's lock could wait on it forever."""
    return request


def _read_answer(response: requests.Response, deadline: float) -> bytes:
    """The answer's first bytes; the rest is read (and dropped) within the deadline."""
    head = b""
    for chunk in response.iter_content(4096):
        if time.monotonic() > deadline:
            raise DeadlineExceeded("answer still arriving at the deadline")
        if len(head) < 1024:
            head += chunk
        if len(head) > _MAX_ANSWER_BYTES:
            break
    return head


class _Watch:
    """Shuts the socket of the request in flight when its deadline passes."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self.connection: Any = None
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        try:
            self._timer.start()
        except RuntimeError:
            # Python 3.12+ starts no thread at interpreter exit; the per-read timeout
            # and the deadline checks between reads still bound the request.
            pass

    def _fire(self) -> None:
        self.fired = True
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


class _WatchedAdapter(HTTPAdapter):
    """Connection pools that hand each checked-out connection to the current watch."""

    def __init__(self) -> None:
        self.current: Optional[_Watch] = None
        super().__init__(max_retries=0)

    def watch(self, deadline: float) -> _Watch:
        watch = _Watch(deadline)
        self.current = watch
        return watch

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        adapter = self

        class WatchedHTTP(HTTPConnectionPool):
            def _get_conn(self, timeout: Optional[float] = None) -> Any:
                connection = super()._get_conn(timeout)
                if adapter.current is not None:
                    adapter.current.connection = connection
                return connection

        class WatchedHTTPS(HTTPSConnectionPool):
            def _get_conn(self, timeout: Optional[float] = None) -> Any:
                connection = super()._get_conn(timeout)
                if adapter.current is not None:
                    adapter.current.connection = connection
                return connection

        self.poolmanager.pool_classes_by_scheme = {"http": WatchedHTTP, "https": WatchedHTTPS}
