"""The durable delivery queue: every request waits here until Opik accepted it.

:func:`open_queue` picks a :class:`DiskQueue` in a private per-user directory, or a
:class:`MemoryQueue` when spooling is disabled or no directory can be used.
"""

from .base import DeliveryQueue
from .disk import DiskQueue
from .memory import MemoryQueue
from .opening import open_queue
from .records import Record, StoredRecord

__all__ = ["DeliveryQueue", "DiskQueue", "MemoryQueue", "Record", "StoredRecord", "open_queue"]
