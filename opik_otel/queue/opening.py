"""Choosing the queue for an exporter: on disk where a private directory can be used."""

import os
import tempfile
from typing import List, Optional, Union

from .base import LOGGER, DeliveryQueue
from .directories import disk_queue_supported
from .disk import DiskQueue
from .location import (
    Location,
    PrivateDirectory,
    UnsafeDirectory,
    default_locations,
    explicit_location,
    fresh_private_directory,
    open_location,
)
from .memory import MemoryQueue


def open_queue(
    directory: Union[str, "os.PathLike[str]", None, bool], *, destination_key: str, max_bytes: int
) -> DeliveryQueue:
    """The delivery queue for one destination.

    Args:
        directory: ``None`` or ``True``: the default private per-user location
            (``$XDG_CACHE_HOME/opik_otel/spool/<key>``, ``~/.cache/...``, else
            ``<temp>/opik_otel-<uid>/spool/<key>``); a path: records wait under
            ``<path>/<key>``; ``False``: memory only (nothing on disk).
        destination_key: identifies the destination (URL, workspace): records of
            different destinations never share a directory, so none is ever sent with
            another destination's credentials.
        max_bytes: size cap; the oldest records are evicted (and counted) beyond it.

    Never raises for a directory problem: an existing directory that is not the user's
    own or is writable by others is refused with a warning and a fresh private one used;
    where no directory can be used at all, records wait in memory (one warning).
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if directory is False:
        LOGGER.info("Opik delivery queue in memory only (spool_directory=False): data not sent is lost at exit")
        return MemoryQueue(max_bytes=max_bytes)
    if not disk_queue_supported():
        LOGGER.warning("Opik delivery queue in memory only: this platform lacks the file locking it needs on disk")
        return MemoryQueue(max_bytes=max_bytes)
    try:
        root = _private_directory(directory, destination_key)
    except Exception as error:  # never let a setting break the host app
        LOGGER.warning("Opik delivery queue in memory only: %s", error)
        root = None
    if root is None:
        return MemoryQueue(max_bytes=max_bytes)
    return DiskQueue(root, max_bytes=max_bytes)


def _private_directory(directory: Union[str, "os.PathLike[str]", None, bool], destination_key: str) -> Optional[PrivateDirectory]:
    temp = tempfile.gettempdir()
    uid = os.geteuid()
    locations: List[Location]
    if directory is None or directory is True:
        locations = default_locations(destination_key, os.environ, os.path.expanduser("~"), temp, uid)
    else:
        locations = [explicit_location(os.fspath(directory), destination_key)]  # type: ignore[arg-type]
    refused = False
    failure = ""
    for location in locations:
        try:
            return open_location(location)
        except UnsafeDirectory as error:
            refused = True
            LOGGER.warning("Not using %s for the Opik delivery queue: %s", location.path, error)
        except OSError as error:
            failure = f"{location.path}: {error.strerror or error}"
    if refused:
        try:
            fresh = fresh_private_directory(temp, uid)
        except (OSError, UnsafeDirectory) as error:
            failure = f"no fresh private directory in {temp}: {error}"
        else:
            LOGGER.warning(
                "The Opik delivery queue uses the fresh private directory %s instead; "
                "data left there at exit is not found by later runs",
                fresh.path,
            )
            return fresh
    LOGGER.warning(
        "Opik delivery queue in memory only, as no directory can be used (%s): "
        "data not yet accepted by Opik is lost when the process ends",
        failure,
    )
    return None
