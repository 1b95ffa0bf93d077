"""Telling a request Opik can never take from an Opik that fails most requests.

Opik answers HTTP 500 to a body it cannot parse, and also when it is overloaded. A
record is declared undeliverable only on clear evidence: it failed many times while the
other requests sent meanwhile were mostly accepted, so that an Opik failing at the rate
observed for the others would fail it that often with a chance below one in a million.
Under a general error rate (a mostly-500 Opik) nothing is ever set aside.
"""

import hashlib
from typing import Dict, Tuple

from .queue import Record

# Consecutive 500s on the head of the queue before it goes to the back (others' turn).
ROTATE_AFTER = 5
# Fewest failures, and fewest successes of other requests meanwhile, for a verdict.
MIN_FAILURES = 10
MIN_OTHER_SUCCESSES = 3
# Chance, under the others' observed failure rate, below which failing is not bad luck.
EVIDENCE = 1e-6


class SuspectTracker:
    """Failure counts per record (by body digest) against everyone else's."""

    KEEP, ROTATE, QUARANTINE = "keep", "rotate", "quarantine"

    def __init__(self) -> None:
        self._attempts = 0
        self._successes = 0
        # digest -> (failures, attempts and successes overall when it first failed)
        self._suspects: Dict[str, Tuple[int, int, int]] = {}

    def pending(self) -> bool:
        """Whether a suspect sent to the back of the queue still waits."""
        return bool(self._suspects)

    def delivered(self, record: Record) -> None:
        self._attempts += 1
        self._successes += 1
        if self._suspects:
            self._suspects.pop(_digest(record), None)

    def failed(self, record: Record) -> str:
        self._attempts += 1
        key = _digest(record)
        failures, attempts0, successes0 = self._suspects.get(key, (0, self._attempts - 1, self._successes))
        failures += 1
        if len(self._suspects) > 1000:
            self._suspects.clear()
        self._suspects[key] = (failures, attempts0, successes0)
        others = self._attempts - attempts0 - failures
        other_successes = self._successes - successes0
        if failures >= MIN_FAILURES and other_successes >= MIN_OTHER_SUCCESSES:
            # Laplace estimate of the others' failure rate: never 0 from few samples.
            rate = (others - other_successes + 1) / (others + 2)
            if rate**failures < EVIDENCE:
                del self._suspects[key]
                return self.QUARANTINE
        return self.ROTATE if failures % ROTATE_AFTER == 0 else self.KEEP


def _digest(record: Record) -> str:
    return hashlib.sha256(record.body).hexdigest()
