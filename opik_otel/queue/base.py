"""The interface every delivery queue implements, and the counters they share."""

import abc
import os
import time
import weakref
from dataclasses import dataclass
from typing import Dict, Optional

from opik_otel._logging import get_logger

from .records import Record, StoredRecord

LOGGER = get_logger("opik_otel.queue")

# Evictions happen once per append while a cap is reached; their counts change every
# time, so the logging filter (which compares arguments) would not hold them back.
DROP_WARNING_INTERVAL_SECONDS = 60.0


@dataclass
class Tally:
    """What a queue holds and what it lost, in this process; kept in memory so that
    ``len()`` and ``stats()`` never touch the disk."""

    records: int = 0
    bytes: int = 0
    items: int = 0
    dropped_records: int = 0
    dropped_bytes: int = 0
    quarantined: int = 0
    next_drop_warning_at: float = 0.0

    def add(self, size: int, items: int) -> None:
        self.records += 1
        self.bytes += size
        self.items += items

    def take(self, size: int, items: int) -> None:
        self.records -= 1
        self.bytes -= size
        self.items -= items

    def drop(self, records: int, size: int) -> None:
        self.dropped_records += records
        self.dropped_bytes += size

    def as_dict(self) -> Dict[str, int]:
        return {
            "records": self.records,
            "bytes": self.bytes,
            "items": self.items,
            "dropped_records": self.dropped_records,
            "dropped_bytes": self.dropped_bytes,
            "quarantined": self.quarantined,
        }

    def refused_as_too_large(self, size: int, max_bytes: int) -> bool:
        """Whether a request of ``size`` bytes is larger than the whole queue; such a
        request is counted as dropped and logged."""
        if size <= max_bytes:
            return False
        self.drop(1, size)
        LOGGER.warning(
            "A request of %d bytes is larger than the whole Opik delivery queue (%d bytes) and was dropped",
            size,
            max_bytes,
        )
        return True

    def report_eviction(self, where: str, max_bytes: int) -> None:
        """Log the running loss at the cap, at most once per interval."""
        now = time.monotonic()
        if now < self.next_drop_warning_at:
            return
        self.next_drop_warning_at = now + DROP_WARNING_INTERVAL_SECONDS
        LOGGER.warning(
            "The Opik delivery queue %s is full (%d bytes): dropped the oldest data; "
            "%d requests (%d bytes) lost so far by this process",
            where,
            max_bytes,
            self.dropped_records,
            self.dropped_bytes,
        )


class DeliveryQueue(abc.ABC):
    """An ordered store of :class:`Record` waiting to be sent, oldest first.

    One sender takes :meth:`oldest`, sends it, and then calls :meth:`remove` (delivered,
    or refused for good) or :meth:`quarantine` (cannot be sent as stored). No method
    raises; problems are logged, counted and reported through return values. Thread-safe.
    Counters are per process: a forked child starts with an empty queue of its own.
    """

    @abc.abstractmethod
    def append(self, record: Record) -> bool:
        """Store ``record`` at the tail; return only once it is stored.

        ``False`` when it could not be stored (invalid, larger than the whole queue, or
        an I/O error); the loss is counted in :meth:`stats` and logged.
        """

    @abc.abstractmethod
    def oldest(self) -> Optional[StoredRecord]:
        """The oldest record held, without removing it; ``None`` when empty.

        Calling it again without :meth:`remove` or :meth:`quarantine` returns the same
        record.
        """

    @abc.abstractmethod
    def remove(self, stored: StoredRecord) -> None:
        """Forget ``stored`` for good (delivered, or refused by Opik for good)."""

    @abc.abstractmethod
    def quarantine(self, stored: StoredRecord, reason: str) -> None:
        """Set ``stored`` aside (it cannot be sent as stored); counted and logged once."""

    @abc.abstractmethod
    def claim_abandoned(self) -> int:
        """Take over records left by dead processes; return how many were claimed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the queue; records not yet sent stay for a later process (on disk)."""

    @property
    @abc.abstractmethod
    def directory(self) -> Optional[str]:
        """Where the records wait on disk, or ``None`` for a memory-only queue."""

    @abc.abstractmethod
    def _tally(self) -> Tally:
        """This process's counters."""

    def __len__(self) -> int:
        """Number of records held (this process's own and claimed ones)."""
        return self._tally().records

    @property
    def size_bytes(self) -> int:
        """Bytes held (for a disk queue: of the record files)."""
        return self._tally().bytes

    @property
    def pending_items(self) -> int:
        """Spans (or trace rows) held, summed over the records."""
        return self._tally().items

    def stats(self) -> Dict[str, int]:
        """``records``, ``bytes``, ``items``, ``dropped_records``, ``dropped_bytes``
        (evicted at the size cap, too large or not storable) and ``quarantined``."""
        return self._tally().as_dict()


def reset_in_forked_child(target: object, method_name: str) -> None:
    """Call ``target.<method_name>()`` in every forked child while ``target`` lives.

    A child must not send (or delete) what its parent holds: the parent sends it.
    """
    register = getattr(os, "register_at_fork", None)
    if register is None:
        return
    reference = weakref.ref(target)

    def reset() -> None:
        obj = reference()
        if obj is not None:
            try:
                getattr(obj, method_name)()
            except Exception:  # a fork hook must never raise
                LOGGER.warning("Resetting an Opik delivery queue after fork failed", exc_info=True)

    register(after_in_child=reset)
