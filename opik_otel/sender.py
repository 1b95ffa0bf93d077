"""The one sender: drains the delivery queue oldest first, on one background thread.

Live data and data left by earlier runs go the same way. A record leaves the queue only
when Opik accepted it, or refused it for good (then it is quarantined, counted and
logged). Everything else waits: retries back off exponentially, honour ``Retry-After``,
and a flush resets the backoff so that a recovered Opik is noticed at once.
"""

import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Optional, Tuple

from ._logging import get_logger
from .queue import DeliveryQueue, Record, StoredRecord
from .reporting import Reporter
from .retry import RETRYABLE_STATUS, RetryPolicy
from .shrinking import Piece, Shrinker
from .suspects import SuspectTracker
from .transport import DELIVERED, RETRY, TOO_LARGE, Answer, Transport, classify

# (url, headers) to send a record with, as configured now; raises ValueError when the
# record cannot be sent as stored.
Route = Callable[[Record], Tuple[str, Dict[str, str]]]

# Statuses that say the set-up is wrong (credentials, URL, a proxy): the data is fine
# and waits for the fix (a rotated key, a corrected URL on the next start).
_SETUP_STATUSES = frozenset({401, 403, 404, 405, 407})

LOGGER = get_logger(__name__)

DONE = "done"
WAIT = "wait"
SETUP = "setup"
# At shutdown, consecutive failed attempts after which the rest is left on disk: an Opik
# that is down must not hold the exit for the whole budget.
CLOSING_ATTEMPTS = 3


class Sender:
    """Delivers the records of ``queue`` in order, one request at a time."""

    def __init__(
        self,
        queue: DeliveryQueue,
        transport: Transport,
        route: Route,
        *,
        policy: RetryPolicy,
        timeout: float,
        reporter: Reporter,
        max_request_bytes: int,
    ) -> None:
        self._queue = queue
        self._transport = transport
        self._route = route
        self._policy = policy
        self._timeout = timeout
        self._report = reporter
        self._shrinker = Shrinker(reporter, max_request_bytes)
        self._suspects = SuspectTracker()
        self._lock = threading.Condition()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._deadline = float("inf")  # set by close(): nothing is sent after it
        self._failures = 0
        self._hold_until = 0.0  # Retry-After
        self.settled = 0  # records removed or quarantined by this sender
        self._requests_begun = 0
        # The number of the latest request answered "the set-up is wrong" (401, 404, 3xx...).
        self._setup_refused_request = 0

    # --- called by the exporter -------------------------------------------------

    def notify(self) -> None:
        """New data is queued."""
        self._start()
        self._wake.set()

    def flush(self, deadline: float) -> bool:
        """Wait until every record queued now is settled; ``True`` when that happened
        before ``deadline`` (monotonic). Records set aside meanwhile are counted by the
        caller (``requests_quarantined``)."""
        with self._lock:
            target = self.settled + len(self._queue)
            # A refusal of a request sent before this flush may predate a fix of the set-up.
            begun = self._requests_begun
            self._failures = 0  # someone is waiting: try again now, not after the backoff
        self._start()
        self._wake.set()
        with self._lock:
            while self.settled < target and len(self._queue) > 0 or self._suspects.pending():
                remaining = deadline - time.monotonic()
                # A refusal of the set-up (credentials, URL) will not change before the
                # timeout: no point waiting for it.
                if remaining <= 0 or self._thread is None or self._setup_refused_request > begun:
                    return False
                self._lock.wait(min(remaining, 0.1))
            return True

    def close(self, deadline: float) -> None:
        """Deliver what Opik takes until ``deadline``, then stop the thread."""
        with self._lock:
            self._deadline = deadline
            self._stopping = True
            self._failures = 0
        self._start()
        self._wake.set()
        thread = self._thread
        if thread is None and len(self._queue) > 0:
            # No thread could be started (Python 3.12+ at interpreter exit): deliver
            # from this one, within the same deadline.
            self._run()
        elif thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()) + 0.2)

    # --- the thread ----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or (self._stopping and len(self._queue) == 0):
                return
            thread = threading.Thread(target=self._run, name="OpikExporterSender", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                return  # interpreter exit on Python 3.12+: close() sends from its own thread
            self._thread = thread

    def _run(self) -> None:
        from opentelemetry.context import attach, detach

        from .batching import suppressed_context

        token = attach(suppressed_context())
        try:
            self._loop()
        except Exception:
            LOGGER.error("The Opik sender stopped unexpectedly.", exc_info=True)
        finally:
            detach(token)
            with self._lock:
                self._thread = None
                self._lock.notify_all()

    def _loop(self) -> None:
        while True:
            stored = self._queue.oldest()
            if stored is None:
                if self._stopping:
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if time.monotonic() >= self._deadline:
                return
            hold = self._hold_until - time.monotonic()
            if hold > 0:
                self._sleep(hold, interruptible=False)
                continue
            self._wake.clear()
            verdict = self._attempt(stored)
            with self._lock:
                if verdict == DONE:
                    self._failures = 0
                else:
                    self._failures += 1
                failures = self._failures
                self._lock.notify_all()
            if self._stopping and verdict != DONE and (verdict == SETUP or failures >= CLOSING_ATTEMPTS):
                return  # what is left waits on disk for the next run
            if verdict != DONE:
                self._sleep(self._policy.delay(failures), interruptible=True)

    def _sleep(self, seconds: float, interruptible: bool) -> None:
        seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        if interruptible:
            self._wake.wait(seconds)  # a flush or close cuts the backoff short
        else:
            time.sleep(min(seconds, 0.5))

    def _attempt(self, stored: StoredRecord) -> str:
        record = stored.record
        try:
            url, headers = self._route(record)
            work = deque([self._shrinker.whole(record)])
        except (ValueError, OSError, EOFError) as error:  # bad header value, damaged gzip body
            self._settle(stored, f"it cannot be sent as stored ({error})")
            return DONE
        verdict, answer, problem = self._send(record, work, url, headers)
        if verdict == DONE:
            if problem is None:
                self._suspects.delivered(record)
            self._settle(stored, problem)
            return DONE
        if answer is not None and answer.status == 500:
            judgement = self._suspects.failed(record)
            if judgement == SuspectTracker.QUARANTINE:
                self._settle(stored, "Opik keeps answering HTTP 500 to it while accepting the requests around it")
                return DONE
            if judgement == SuspectTracker.ROTATE and self._queue.append(record):
                # To the back of the queue, so that the others get their turn.
                self._queue.remove(stored)
                return DONE
        return verdict

    def _settle(self, stored: StoredRecord, problem: Optional[str]) -> None:
        if problem is None:
            self._queue.remove(stored)
        else:
            self._queue.quarantine(stored, problem)
            self._report.count("requests_quarantined")
        with self._lock:
            self.settled += 1
            self._lock.notify_all()

    def _send(
        self, record: Record, work: "Deque[Piece]", url: str, headers: Dict[str, str]
    ) -> Tuple[str, Optional[Answer], Optional[str]]:
        """Send a record's pieces in order: (DONE, _, None) when all were delivered,
        (DONE, answer, why) when it is refused for good, (SETUP, answer, None) when the
        set-up is refused, (WAIT, answer, None) when it is worth another try.

        Pieces delivered before a failure are sent again with the rest next time: Opik
        upserts by id, so a repeat is harmless, and the record stays whole in the queue.
        """
        refusals = 0
        while work:
            piece = work.popleft()
            smaller = self._shrinker.presplit(record, piece)
            if smaller is not None:
                work.extendleft(reversed(smaller))
                continue
            with self._lock:
                self._requests_begun += 1
                request = self._requests_begun
            answer = self._post(url, piece.body, headers)
            verdict = classify(answer, RETRYABLE_STATUS)
            if verdict == DELIVERED:
                self._report.count("requests_sent")
            elif verdict == TOO_LARGE:
                refusals += 1
                smaller = self._shrinker.after_413(record, piece, refusals, url)
                if smaller is None:
                    self._report.count("requests_refused")
                    return DONE, answer, f"HTTP 413 for {len(piece.body)} bytes, the smallest it could be made"
                work.extendleft(reversed(smaller))
            elif _waits_for_setup(answer):
                self._on_failure(record.kind, url, answer)
                with self._lock:
                    self._setup_refused_request = request
                    self._lock.notify_all()
                return SETUP, answer, None
            elif verdict == RETRY:
                self._on_failure(record.kind, url, answer)
                return WAIT, answer, None
            else:
                self._refuse(record.kind, url, answer)
                return DONE, answer, f"refused with HTTP {answer.status}"
        return DONE, None, None

    def _post(self, url: str, body: bytes, headers: Dict[str, str]) -> Answer:
        seconds = min(self._timeout, self._deadline - time.monotonic())
        if seconds <= 0.01:
            return Answer(error=TimeoutError("the shutdown deadline passed"))
        answer = self._transport.post(url, body, headers, seconds)
        if answer.retry_after is not None:
            self._hold_until = time.monotonic() + answer.retry_after
        return answer

    def _on_failure(self, kind: str, url: str, answer: Answer) -> None:
        self._report.count("requests_retried")
        if answer.status in _SETUP_STATUSES or answer.not_delivery or (answer.status or 0) // 100 == 3:
            cause = ("setup", kind, answer.status, answer.not_delivery is not None)
            self._report.log_cause(cause, "error", "%s", self._report.describe(kind, url, answer))
        else:
            self._report.unreachable(kind, url, answer)

    def _refuse(self, kind: str, url: str, answer: Answer) -> None:
        """A request refused for good (400 and the like): the evidence is the answer itself."""
        self._report.count("requests_refused")
        self._report.log_cause(
            ("refused", kind, answer.status),
            "warning",
            "%s The request was set aside.",
            self._report.describe(kind, url, answer),
        )


def _waits_for_setup(answer: Answer) -> bool:
    status = answer.status
    return answer.not_delivery is not None or (status is not None and (status in _SETUP_STATUSES or 300 <= status < 400))
